"""The workers: HTTPWorker (base), PollerWorker, WebhookSenderWorker."""

from .base import HTTPWorker

__all__ = ["HTTPWorker"]
