"""Observability: structured logging, redaction, metrics, events, Prometheus and the ops server."""
