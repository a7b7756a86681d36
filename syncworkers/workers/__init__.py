"""The workers: HTTPWorker (base), PollerWorker, WebhookSenderWorker."""

from .base import HTTPWorker
from .poller import PollerWorker, PollOutcome
from .webhook import DeliveryResult, WebhookSenderWorker

__all__ = ["HTTPWorker", "PollerWorker", "PollOutcome", "WebhookSenderWorker", "DeliveryResult"]
