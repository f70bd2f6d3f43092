"""Prometheus metrics: catalog, recording API, run totals, HTTP endpoint, Pushgateway."""
