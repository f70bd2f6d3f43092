"""Security: bound parameters, quoted identifiers, secrets kept out of every output, TLS."""
