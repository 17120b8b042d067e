"""The node's HTTP port (``--http-listen``): Prometheus metrics and health endpoints."""
