"""Source: an iterable of messages that a worker's ``process()`` loop consumes.

``consume()`` takes no arguments and still ends promptly when the worker
stops: every source has a stop event, which the worker replaces with its run's
stop signal through :meth:`Source.bind` and sets through :meth:`Source.close`.
A source whose waits must end at once registers :meth:`Source._wake` with the
signal (``StopSignal.on_set``): nothing polls the event.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Iterator, Optional, Type

from ..message import Message
from ..signals import StopSignal


class Source:
    """Base of the message sources: a stop event, ``consume()``, ``ack()`` / ``nack()``.

    ``consume()`` yields messages until the stop event is set. The consumer
    settles each message with ``ack()`` (done) or ``nack()`` (failed), so that a
    reliable source can redeliver what was never settled.
    """

    def __init__(self) -> None:
        self.stop_event: threading.Event = StopSignal()
        self.stop_event.on_set(self._wake)

    def bind(self, stop_event: threading.Event) -> None:
        """Use *stop_event* (the worker's) as this source's stop event from now on.

        A running ``consume()`` looks at the new event from its next wait on; a
        StopSignal also wakes it the moment it is set.
        """
        self.stop_event = stop_event
        if isinstance(stop_event, StopSignal):
            stop_event.on_set(self._wake)
        self._wake()  # a consume() waiting on the old event looks at the new one now

    def _wake(self) -> None:
        """Wake every wait of this source (its stop event was set or replaced); must not block."""

    def consume(self) -> Iterator[Message]:
        """Yield messages until the stop event is set."""
        raise NotImplementedError(f"{type(self).__name__} does not implement consume()")

    def __iter__(self) -> Iterator[Message]:
        return self.consume()

    def ack(self, message: Message) -> None:
        """*message* was processed; the source may forget it."""

    def nack(self, message: Message, requeue: bool = True) -> None:
        """Processing *message* failed; with *requeue* it is delivered again later."""

    def close(self) -> None:
        """Set the stop event, so every running ``consume()`` returns, and release resources."""
        self.stop_event.set()
        self._wake()  # a plain Event bound in cannot wake anyone itself

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


__all__ = ["Source"]
