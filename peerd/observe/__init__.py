"""Observability that is optional and off by default: OpenTelemetry export (:mod:`.otel`)."""
