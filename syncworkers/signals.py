"""StopSignal: the one stop signal of a run, passed down to everything that waits.

A :class:`StopSignal` is a ``threading.Event`` that can have linked children:
setting it sets every child at once, so a broadcast can be cancelled on its own
(``fail_fast``) while the run's stop still reaches it, and nothing has to poll a
flag on a timer. Whoever starts a run creates its signal; it is never swapped
while the run lasts.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, List


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


__all__ = ["StopSignal"]
