"""Webhook delivery: a sender's parts (direct sends, broadcasts, the outbox producer), what a webhook
request is, and the outbox's dispatch loop, claims, attempts, verdicts and outcomes."""
