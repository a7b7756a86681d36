"""How a poller's polls have gone: when one last succeeded and how many failed in a row since."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Callable, Optional, Tuple


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class PollHealth:
    """The record of poll results a poller's ``health()`` and readiness read (thread-safe).

    *now* gives the aware UTC time a success is stamped with (injected in tests).
    """

    def __init__(self, now: Callable[[], datetime] = _utc_now) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._last_success: Optional[datetime] = None
        self._failures = 0

    def record(self, success: bool) -> None:
        """One poll's result: a success clears the failures in a row, a failure adds one."""
        with self._lock:
            if success:
                self._last_success = self._now()
                self._failures = 0
            else:
                self._failures += 1

    @property
    def consecutive_failures(self) -> int:
        """Failed polls since the last success (or since the start)."""
        with self._lock:
            return self._failures

    def snapshot(self) -> Tuple[Optional[datetime], int]:
        """``(last success or None, consecutive failures)``, read together."""
        with self._lock:
            return self._last_success, self._failures


__all__ = ["PollHealth"]
