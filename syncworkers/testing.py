"""Test helpers: :func:`capture_webhooks` records the webhooks a test would send, and sends none.

A capture, not a mock — as ``django.core.mail.outbox`` is for mail: ``send_webhook``,
``broadcast_webhook`` and ``enqueue`` run as in production (input checks, signing, the
outbox write in the caller's transaction) up to the request, which the capture takes
instead of the receiver. With pytest, ``from syncworkers.testing import captured_webhooks``
in a ``conftest.py`` gives the same capture as a fixture.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Union, overload

from .delivery import capture
from .delivery.capture import CapturedWebhook

if TYPE_CHECKING:
    from .outbox.store import OutboxStore


class _Entry:
    """One recorded webhook; for an enqueued one, the outbox to ask whether it still stands."""

    def __init__(self, webhook: CapturedWebhook, outbox: Optional["OutboxStore"]) -> None:
        self.webhook = webhook
        self.outbox = outbox  # None: it was sent, or a deliverer claimed it (so it was committed)
        self.seen = False  # the outbox's last answer, kept for when it can no longer be asked

    def stands(self) -> bool:
        outbox = self.outbox
        if outbox is None:
            return True
        try:
            self.seen = outbox.get(self.webhook.id) is not None
        except outbox.errors:  # closed (the app was torn down) or unreachable: what it said last
            pass
        return self.seen


class CapturedWebhooks(Sequence[CapturedWebhook]):
    """The webhooks a capture recorded, in the order they were handed to it (a broadcast's in any order).

    Read anew at each use: an enqueued delivery is listed while its outbox holds it
    (see :func:`capture_webhooks`). Each item is a :class:`CapturedWebhook`: ``id``,
    ``endpoint``, ``url``, ``payload`` (the body decoded), ``body``, ``headers`` (the
    request's, ``webhook-signature`` included) and ``enqueued``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: List[_Entry] = []
        self._enqueued: Dict[str, _Entry] = {}  # outbox deliveries by id: each is listed once

    def take(self, webhook: CapturedWebhook, outbox: Optional["OutboxStore"]) -> None:
        """Record *webhook* (called by the sender, on its own thread)."""
        with self._lock:
            known = self._enqueued.get(webhook.id) if webhook.enqueued else None
            if known is not None:
                if outbox is None:  # a deliverer claimed what was enqueued: it was committed
                    known.outbox = None
                return
            entry = _Entry(webhook, outbox)
            self._entries.append(entry)
            if webhook.enqueued:
                self._enqueued[webhook.id] = entry

    def _listed(self) -> List[CapturedWebhook]:
        with self._lock:
            entries = list(self._entries)
        return [entry.webhook for entry in entries if entry.stands()]  # outside the lock: it reads the outbox

    @property
    def ids(self) -> List[str]:
        """The ``webhook-id`` of each."""
        return [webhook.id for webhook in self._listed()]

    @property
    def payloads(self) -> List[Any]:
        """The decoded body of each: what was given as ``data``."""
        return [webhook.payload for webhook in self._listed()]

    def clear(self) -> None:
        """Forget what was recorded so far (the capture goes on)."""
        with self._lock:
            self._entries.clear()
            self._enqueued.clear()

    def settle(self) -> None:
        """Ask each enqueued delivery's outbox now, so that its answer stays known once the outbox is closed."""
        self._listed()

    @overload
    def __getitem__(self, index: int) -> CapturedWebhook: ...

    @overload
    def __getitem__(self, index: slice) -> List[CapturedWebhook]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[CapturedWebhook, List[CapturedWebhook]]:
        return self._listed()[index]

    def __len__(self) -> int:
        return len(self._listed())

    def __iter__(self) -> Iterator[CapturedWebhook]:
        return iter(self._listed())

    def __eq__(self, other: object) -> bool:
        """Equal to a list (or other sequence) of the same webhooks: ``assert webhooks == []`` reads as it says."""
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self._listed() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # its contents change

    def __repr__(self) -> str:
        return f"CapturedWebhooks({self._listed()!r})"


@contextmanager
def capture_webhooks() -> Iterator[CapturedWebhooks]:
    """Record every webhook sent while the block runs, from any thread, and send none.

    ``send_webhook``, ``deliver``, ``broadcast_webhook`` (each endpoint) and a running
    sender's outbox attempts hand their request to the capture instead of the receiver:
    the caller gets a success (``True``; an outbox delivery is marked delivered) and no
    request leaves the process. Bad input still raises, before anything is recorded.

    ``enqueue`` (``contrib.django.enqueue``, ``sw.sender.enqueue``) still writes to the
    outbox, in the caller's transaction, and is recorded with the headers its first
    attempt would carry. Whether the transaction kept it is the outbox's to say: an
    enqueued delivery is listed while ``sender.outbox.get(id)`` finds it from the
    thread reading the capture. On Django that read runs on Django's connection, in
    the test's transaction: inside a ``TestCase`` (whose outer transaction never
    commits) a delivery enqueued in an inner ``atomic()`` that exits normally is
    listed, one whose ``atomic()`` raised is not. Any other outbox reads on its own
    connections: a delivery written on your ``connection=`` (sqlite3, psycopg, the
    DB-API connection under an ORM session) is listed once your transaction commits,
    never if it rolls back. An outbox that can no longer be read (closed at teardown)
    keeps its last answer, asked at the latest when the block ends.

    Captures nest (each records what is sent while it is active) and end with their
    block: afterwards webhooks go to their receivers again. A delivery enqueued during
    the capture and still pending after it is the outbox's, as any other: a later
    ``flush()`` or running worker sends it.
    """
    webhooks = CapturedWebhooks()
    capture.attach(webhooks)
    try:
        yield webhooks
    finally:
        capture.detach(webhooks)
        webhooks.settle()


def _fixture() -> Any:
    import pytest

    @pytest.fixture
    def captured_webhooks() -> Iterator[CapturedWebhooks]:
        """The webhooks the test sends, recorded and not sent (:func:`syncworkers.testing.capture_webhooks`)."""
        with capture_webhooks() as webhooks:
            yield webhooks

    return captured_webhooks


def __getattr__(name: str) -> Any:
    # The fixture is made on first import, so that this module needs pytest only when a conftest asks for it
    # (Django's own test runner imports capture_webhooks without it).
    if name == "captured_webhooks":
        fixture = globals()[name] = _fixture()
        return fixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | {"captured_webhooks"})


__all__ = ["CapturedWebhook", "CapturedWebhooks", "capture_webhooks", "captured_webhooks"]
