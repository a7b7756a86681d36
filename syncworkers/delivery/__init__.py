"""Webhook delivery: the request a delivery makes, broadcasts, and the outbox's dispatch, attempts and verdicts."""
