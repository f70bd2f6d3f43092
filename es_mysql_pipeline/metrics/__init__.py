"""Prometheus metrics: the catalog, the recording API, run totals, the HTTP endpoint and Pushgateway."""
