"""Where the service reports: Prometheus metrics and OpenTelemetry traces."""
