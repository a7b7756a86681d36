"""MemoryQueue: an in-process source on :class:`queue.Queue` (tests, single-process relays).

Nothing survives the process: use the outbox or RedisListConsumer for durability.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from typing import Any, Deque, Iterator, Optional

from ..config.defaults import MAX_COUNT
from ..config.validators import checked, count
from ..message import Message
from ..signals import Deadline, StopSignal
from .base import Source

#: Longest wait of ``consume()`` or ``put()`` between looks at a stop event that cannot wake them
#: (a plain ``threading.Event`` bound in); the run's StopSignal wakes them at once.
STOP_CHECK_INTERVAL = 0.1


class MemoryQueue(Source):
    """A FIFO of messages in memory.

    ``join()`` waits until every message put has been ack'ed or nack'ed (as
    ``Queue.join`` does with ``task_done``, but with a timeout); a message
    requeued by ``nack()`` still counts as unfinished.
    """

    def __init__(self, maxsize: int = 0):
        self.maxsize: int = checked("maxsize", maxsize, count(minimum=0, maximum=MAX_COUNT, text=False))
        self._items: Deque[Message] = deque()
        self._changed = threading.Condition()  # an item added or taken, or the stop event set
        self._done = threading.Condition()
        self._unfinished = 0  # put, and not yet ack'ed or nack'ed without requeue
        self._in_flight: Counter[str] = Counter()  # message id -> times consumed and not yet settled
        super().__init__()

    def put(self, item: Any, timeout: Optional[float] = None) -> Message:
        """Queue *item* and return its message: a Message as is, anything else as ``Message(body=item)``.

        When the queue is full, waits for room up to *timeout* seconds (None: no
        limit) and raises :class:`queue.Full` when none frees up in time or the
        source is closed meanwhile.
        """
        message = item if isinstance(item, Message) else Message(body=item)
        # Counted before it is visible, so a fast consumer's ack never makes the count negative.
        with self._done:
            self._unfinished += 1
        try:
            self._put_waiting(message, timeout)
        except BaseException:
            self._finish()
            raise
        return message

    def _put_waiting(self, message: Message, timeout: Optional[float]) -> None:
        deadline = Deadline(timeout)
        with self._changed:
            while self.maxsize > 0 and len(self._items) >= self.maxsize:
                if deadline.expired or self.stop_event.is_set():
                    raise queue.Full
                self._changed.wait(self._step(deadline.remaining()))
            self._items.append(message)
            self._changed.notify_all()

    def _step(self, left: Optional[float]) -> Optional[float]:
        """How long one wait may last: until woken, unless the stop event cannot wake us."""
        step = None if isinstance(self.stop_event, StopSignal) else STOP_CHECK_INTERVAL
        if left is None:
            return step
        return left if step is None else min(left, step)

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def qsize(self) -> int:
        """Messages waiting to be consumed (approximate while other threads use the queue)."""
        with self._changed:
            return len(self._items)

    def consume(self) -> Iterator[Message]:
        """Yield messages in the order they were put until the stop event is set.

        A message not settled with ack()/nack() by the time the loop asks for
        the next one is acknowledged then.
        """
        while True:
            with self._changed:
                while not self._items and not self.stop_event.is_set():
                    self._changed.wait(self._step(None))
                if self.stop_event.is_set():
                    return
                message = self._items.popleft()
                self._changed.notify_all()  # room for a waiting put()
            with self._done:
                self._in_flight[message.id] += 1
            yield message
            self.ack(message)  # asking for the next one settles this one (no-op if settled)

    def ack(self, message: Message) -> None:
        """Mark *message* processed; unknown or already settled messages are ignored."""
        if self._settle(message):
            self._finish()

    def nack(self, message: Message, requeue: bool = True) -> None:
        """Mark *message* failed; with *requeue* it goes back to the end of the queue."""
        if not self._settle(message):
            return
        if requeue:
            # Appended even when the queue is full: it was admitted once already, and a
            # consumer that waited for room to requeue could wait on itself.
            with self._changed:
                self._items.append(message)
                self._changed.notify_all()
        else:
            self._finish()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until every message put has been settled; False if *timeout* passed first."""
        with self._done:
            return self._done.wait_for(lambda: self._unfinished == 0, timeout)

    def _settle(self, message: Message) -> bool:
        with self._done:
            held = self._in_flight.get(message.id, 0)
            if not held:
                return False
            if held == 1:
                del self._in_flight[message.id]
            else:
                self._in_flight[message.id] = held - 1
            return True

    def _finish(self) -> None:
        with self._done:
            self._unfinished -= 1
            self._done.notify_all()

    def __repr__(self) -> str:
        return f"MemoryQueue(maxsize={self.maxsize}, qsize={self.qsize()})"


__all__ = ["MemoryQueue", "STOP_CHECK_INTERVAL"]
