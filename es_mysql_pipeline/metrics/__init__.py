"""Prometheus metrics: definitions, the recording API, the HTTP endpoint and Pushgateway."""
