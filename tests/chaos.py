"""A chaos receiver: a webhook endpoint on 127.0.0.1 that misbehaves on purpose.

Built on :class:`tests.server.LoopbackServer`. Each POST to any path gets one
fault, drawn with a seeded RNG from *weights*, or taken in turn from *script*:

=========  ===============================================================
ok         200
slow       200 after ``slow_seconds`` (well within the client's read timeout)
500, 503   that status
429        429 with ``Retry-After: <retry_after>``
410        410 Gone
close      the connection is closed once the request is read, no answer
reset      the connection is reset (RST) once the request is read
stall      no answer for ``stall_seconds`` (past the read timeout), then close
redirect   302 to another path (webhooks do not follow redirects)
huge       200 with a body of ``huge_size`` bytes (over max_response_size)
=========  ===============================================================

``seen`` counts every request per ``webhook-id``; ``accepted`` counts the ids
answered 200 (``ok``/``slow``/``huge``) — the answers a sender counts as delivered
(an oversized answer to an accepted webhook is not read, and not a failure). With a
*secret* every request's signature is checked (``bad_signatures``).

Also here: :class:`EnvSender`, a sender for ``syncworkers run tests.chaos:EnvSender``
in the subprocess tests (configured from the environment only).
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence

from syncworkers.exceptions import ConfigError, SignatureError
from syncworkers.scheduling.runner import LoopJob
from syncworkers.signing import verify
from syncworkers.workers.base import Job
from syncworkers.workers.webhook import WebhookSenderWorker

from .server import LoopbackServer, Reply, Request

FAULTS = ("ok", "slow", "500", "503", "429", "410", "close", "reset", "stall", "redirect", "huge")
#: About one request in three fails; two in a hundred are gone for good (410).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "ok": 56, "slow": 6, "500": 7, "503": 6, "429": 6, "410": 2, "close": 4, "reset": 4, "stall": 2,
    "redirect": 3, "huge": 4,
}
ACCEPTED = ("ok", "slow", "huge")


def quiet(server: LoopbackServer) -> LoopbackServer:
    """Silence the tracebacks of replies written to clients that gave up (timed out, killed, body too large)."""
    server._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    return server


class ChaosReceiver(LoopbackServer):
    """A LoopbackServer whose every POST gets a fault (see the module docstring)."""

    def __init__(self, *, seed: int = 0, weights: Optional[Mapping[str, float]] = None,
                 script: Optional[Sequence[str]] = None, slow_seconds: float = 0.05,
                 stall_seconds: float = 1.0, retry_after: str = "1", huge_size: int = 256 * 1024,
                 secret: Optional[str] = None) -> None:
        super().__init__()
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = (set(weights) | set(script or ())) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self._names: List[str] = list(weights)
        self._weights: List[float] = [weights[n] for n in self._names]
        self._script = list(script or ())
        self._rng = random.Random(seed)
        self.slow_seconds = slow_seconds
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.huge_size = huge_size
        self.secret = secret
        self.seen: Counter = Counter()
        self.accepted: Counter = Counter()
        self.faults: Counter = Counter()
        self.bodies: Dict[str, bytes] = {}
        self.conflicts = 0  # one id, two different bodies
        self.bad_signatures = 0
        self.overlaps = 0  # a request arrived while another with its id was being answered
        self._active: Counter = Counter()
        self._count = 0
        quiet(self)
        self.route("*", "/hook", handler=self._handle)

    def _next_fault(self) -> str:
        with self._lock:
            n = self._count
            self._count += 1
            if self._script:
                return self._script[n % len(self._script)]
            return self._rng.choices(self._names, self._weights)[0]

    def _handle(self, req: Request) -> Reply:
        delivery_id = req.header("webhook-id") or ""
        fault = self._next_fault()
        bad = False
        if self.secret is not None:
            try:
                verify(req.body, req.headers, self.secret)
            except SignatureError:
                bad = True
        with self._lock:
            self.seen[delivery_id] += 1
            self.faults[fault] += 1
            self.bad_signatures += bad
            known = self.bodies.setdefault(delivery_id, req.body)
            self.conflicts += known != req.body
            self._active[delivery_id] += 1
            self.overlaps += self._active[delivery_id] > 1
        try:
            if fault == "slow":
                self.stopping.wait(self.slow_seconds)
            if fault in ACCEPTED:
                with self._lock:
                    self.accepted[delivery_id] += 1
            return self._reply(fault)
        finally:
            with self._lock:
                self._active[delivery_id] -= 1

    def _reply(self, fault: str) -> Reply:
        if fault == "huge":
            return Reply(200, b"x" * self.huge_size)
        if fault in ACCEPTED:
            return Reply(200, b"ok")
        if fault in ("500", "503", "410"):
            return Reply(int(fault), b"chaos")
        if fault == "429":
            return Reply(429, b"slow down", {"Retry-After": self.retry_after})
        if fault in ("close", "reset"):
            return Reply(fault=fault)
        if fault == "stall":
            return Reply(delay=self.stall_seconds, fault="close")
        if fault == "redirect":
            return Reply(302, b"", {"Location": "/elsewhere"})
        raise ValueError(f"unknown fault {fault!r}")


class EnvSender(WebhookSenderWorker):
    """A sender configured from the environment (HTTP_BASE_URL, WEBHOOK_OUTBOX_PATH, ...).

    Prints ``STOP EVENT SET`` on stderr the moment its Runner begins to stop, so that
    a test knows when no new delivery can start, and at shutdown() how many of the
    outbox's deliveries are still in flight.
    """

    def __init__(self) -> None:
        super().__init__(name="env-sender")

    def jobs(self) -> List[Job]:
        return [*super().jobs(), LoopJob("announce-stop", self._announce_stop)]

    def shutdown(self) -> None:
        try:
            in_flight = self.outbox.counts()["in_flight"]
        except ConfigError:  # the outbox could not be opened: start() failed
            return
        print(f"SHUTDOWN in_flight={in_flight}", file=sys.stderr, flush=True)

    @staticmethod
    def _announce_stop(stop_event: threading.Event) -> None:
        stop_event.wait()
        print("STOP EVENT SET", file=sys.stderr, flush=True)


__all__ = ["ChaosReceiver", "EnvSender", "FAULTS", "DEFAULT_WEIGHTS", "quiet"]
