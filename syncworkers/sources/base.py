"""Source: an iterable of messages that a worker's ``process()`` loop consumes.

``consume()`` takes no arguments and still ends promptly when the worker
stops: every source has a stop event, which the worker replaces with its own
through :meth:`Source.bind` and sets through :meth:`Source.close`.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Iterator, Optional, Type

from ..message import Message


class Source:
    """Base of the message sources: a stop event, ``consume()``, ``ack()`` / ``nack()``.

    ``consume()`` yields messages until the stop event is set. The consumer
    settles each message with ``ack()`` (done) or ``nack()`` (failed), so that a
    reliable source can redeliver what was never settled.
    """

    def __init__(self) -> None:
        self.stop_event = threading.Event()

    def bind(self, stop_event: threading.Event) -> None:
        """Use *stop_event* (the worker's) as this source's stop event from now on.

        A running ``consume()`` looks at the new event from its next wait on.
        """
        self.stop_event = stop_event

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

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


__all__ = ["Source"]
