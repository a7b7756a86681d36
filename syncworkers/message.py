"""Message: what a poll produces and what a webhook relay consumes; ids of messages and of processes."""

from __future__ import annotations

import os
import platform
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    """Return a fresh message/delivery id (``msg_`` + 32 hex digits)."""
    return "msg_" + uuid.uuid4().hex


def owner_id() -> str:
    """This process's name among those sharing a store or a queue: ``host:pid:random``.

    What operators see on outbox leases, tick claims and Redis consumers; the random
    part tells apart a restarted process that was given the same pid.
    """
    return f"{platform.node() or 'localhost'}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Message:
    """One unit of work.

    ``headers`` of a polled message carry ``status_code`` (int),
    ``response_time`` (milliseconds, float), ``url``, ``method`` and
    ``content_type``; the HTTP response headers themselves are in
    ``headers["response_headers"]``. ``timestamp`` is an aware UTC datetime.
    """

    body: Any = None
    headers: Dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=_utcnow)
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if self.headers is None:
            self.headers = {}
        if self.timestamp.tzinfo is None:
            # A naive timestamp is taken to be UTC, never local time.
            self.timestamp = self.timestamp.replace(tzinfo=timezone.utc)
        else:
            self.timestamp = self.timestamp.astimezone(timezone.utc)
        self.id = str(self.id)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly form (used by queues that store messages)."""
        return {
            "id": self.id,
            "body": self.body,
            "headers": self.headers,
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Message":
        """Rebuild a message from :meth:`to_dict` output (extra keys are ignored)."""
        kwargs: Dict[str, Any] = {"body": data.get("body"), "headers": data.get("headers") or {}}
        if data.get("id"):
            kwargs["id"] = data["id"]
        if data.get("timestamp"):
            kwargs["timestamp"] = datetime.fromisoformat(data["timestamp"])
        return cls(**kwargs)
