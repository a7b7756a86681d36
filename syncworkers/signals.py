"""When to stop: the one stop signal of a run, passed down to everything that waits, and deadlines.

A :class:`StopSignal` is a ``threading.Event`` that can have linked children:
setting it sets every child at once, so a broadcast can be cancelled on its own
(``fail_fast``) while the run's stop still reaches it, and nothing has to poll a
flag on a timer. Whoever starts a run creates its signal; it is never swapped
while the run lasts. A :class:`Deadline` is the one rule for "how long is left"
of a wait given a timeout.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Callable, List, Optional


class StopSignal(threading.Event):
    """An Event whose :meth:`set` also sets its children and calls its callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self._links = threading.Lock()
        self._children: "weakref.WeakSet[StopSignal]" = weakref.WeakSet()
        self._callbacks: List[Callable[[], None]] = []

    def set(self) -> None:
        super().set()
        with self._links:
            children, callbacks = list(self._children), list(self._callbacks)
        for child in children:
            child.set()
        for callback in callbacks:
            callback()

    def child(self) -> "StopSignal":
        """A new signal that is set when this one is (at once if it already is); setting it leaves this one alone."""
        return StopSignal.any(self)

    @staticmethod
    def any(*parents: threading.Event) -> "StopSignal":
        """A new signal set as soon as any of *parents* is set.

        Parents that are plain Events (not StopSignals) cannot tell anyone when they are
        set: they are only looked at now. Pass StopSignals to be woken.
        """
        signal = StopSignal()
        for parent in parents:
            if isinstance(parent, StopSignal):
                parent._link(signal)
            elif parent.is_set():
                signal.set()
        return signal

    def on_set(self, callback: Callable[[], None]) -> None:
        """Call *callback()* when the signal is set (at once if it already is); it must not block."""
        with self._links:
            if not self.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _link(self, child: "StopSignal") -> None:
        with self._links:
            if not self.is_set():
                self._children.add(child)
                return
        child.set()


class Deadline:
    """The end of a wait of *timeout* seconds from now on *clock* (None: no end).

    :meth:`remaining` is what ``Event.wait``, ``Thread.join`` and ``futures.wait`` take:
    seconds left (never below 0), or None when there is no deadline.
    """

    __slots__ = ("at", "_clock")

    def __init__(self, timeout: Optional[float], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: When it falls on *clock*; None for no deadline.
        self.at: Optional[float] = None if timeout is None else clock() + max(0.0, timeout)

    def remaining(self) -> Optional[float]:
        """Seconds left (0 once passed); None when there is no deadline."""
        return None if self.at is None else max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed (never without one)."""
        return self.at is not None and self._clock() >= self.at

    def cap(self, seconds: float) -> float:
        """*seconds*, or what is left if that is less: how long one step of a longer wait may last."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)

    def __repr__(self) -> str:
        left = self.remaining()
        return "Deadline(none)" if left is None else f"Deadline({left:.3f}s left)"


__all__ = ["Deadline", "StopSignal"]
