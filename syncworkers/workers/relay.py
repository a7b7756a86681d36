"""The relay of a webhook sender: consume a message source, hand each message on, settle it.

:class:`Relay` is what ``WebhookSenderWorker.process()`` does by default (each
message to the worker's ``process_message``, then ack, or nack if it raised), the
loop job that runs ``process()``, and the source-draining half of ``run_once()``.

A ``run_once()`` cycle runs ``process()`` on a thread of its own until the source
goes quiet. It sees each message through :func:`counted`, which wraps every
``process_message`` of a webhook sender (its own, and a subclass's when the class
is defined): a call made on a cycle's thread is counted by that cycle (busy, when
it ended, what it returned, whether it raised), whoever made it — the default
loop, or a ``process()`` of the subclass's own, as in the reference's relays.
Calls on any other thread are left alone.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from ..exceptions import DeliveryError
from ..message import Message
from ..observability.metrics import Metrics
from ..signals import StopSignal

#: run_once(): seconds without a new message after which the source counts as drained.
ONCE_IDLE_SECONDS = 1.0

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class CycleResult:
    """What one ``run_once()`` cycle of a sender did; ``ok`` drives ``syncworkers run --once``."""

    ok: bool  #: no message raised, no delivery died or stayed pending, the source was reachable
    results: List[Any] = field(default_factory=list)  #: what process_message returned, per message
    error: Optional[str] = None  #: why the cycle is not ok


class _Cycle:
    """What one drain saw: messages in hand, when the last one ended, their results, the first failure."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._busy = 0
        self._last = clock()
        self._ended = False  # process() returned
        self.results: List[Any] = []
        self.failed: Optional[str] = None

    def handle(self, call: Callable[[], Any]) -> Any:
        with self._changed:
            self._busy += 1
        try:
            result = call()
        except Exception:
            self.fail("process_message raised")
            raise
        finally:
            with self._changed:
                self._busy -= 1
                self._last = self._clock()
                self._changed.notify_all()
        with self._changed:
            self.results.append(result)
        return result

    def fail(self, reason: str) -> None:
        with self._changed:
            self.failed = self.failed or reason

    def end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_quiet(self, idle: float) -> None:
        """Return when process() ended, or no message has been in hand for *idle* seconds."""
        with self._changed:
            while not self._ended:
                left = self._last + idle - self._clock() if not self._busy else None
                if left is not None and left <= 0:
                    return
                self._changed.wait(left)


_cycles = threading.local()  # .current: the _Cycle draining on this thread, if any


def counted(handler: Handler) -> Handler:
    """Wrap a ``process_message`` so that the run_once() cycle of the calling thread sees its calls.

    A nested call (a subclass's ``super().process_message(message)``) is part of the outer one.
    """
    if getattr(handler, "__counted__", False):
        return handler

    @functools.wraps(handler)
    def process_message(*args: Any, **kwargs: Any) -> Any:
        cycle: Optional[_Cycle] = getattr(_cycles, "current", None)
        if cycle is None:
            return handler(*args, **kwargs)
        _cycles.current = None
        try:
            return cycle.handle(lambda: handler(*args, **kwargs))
        finally:
            _cycles.current = cycle

    setattr(process_message, "__counted__", True)
    return process_message  # type: ignore[return-value]


def counted_method(method: Any) -> Any:
    """*method* as a class holds it (a function, a staticmethod or a classmethod), its calls counted;
    *method* itself when they are already, or when it is something else."""
    if isinstance(method, (staticmethod, classmethod)):
        func = counted(method.__func__)
        return method if func is method.__func__ else type(method)(func)
    return counted(method) if inspect.isfunction(method) else method


class Relay:
    """Consumes a source: each message to *handle*, then ack, or nack (requeue) if it raised.

    *run* gives the current run's stop signal: a DeliveryError raised while it is
    set is a message handed back by stop(), logged as such, not as an error.
    """

    def __init__(self, handle: Callable[[Message], Any], run: Callable[[], StopSignal], *, logger: Any,
                 stats: Metrics, join_timeout: float, idle_seconds: float = ONCE_IDLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.idle_seconds = idle_seconds  #: run_once(): quiet this long, the source counts as drained
        self.join_timeout = join_timeout  #: run_once(): how long process() may take to return once drained
        self.clock = clock  #: monotonic seconds, for the quiet period
        self._handle = handle
        self._run = run
        self._stats = stats

    def consume(self, source: Any) -> None:
        """Each message of *source* to *handle* until the source ends (it is closed, or its stop event set)."""
        for message in source.consume():
            try:
                self._handle(message)
            except Exception as exc:
                if isinstance(exc, DeliveryError) and self._run().is_set():
                    # process_message's documented way to hand a message back on stop: not an error.
                    self.logger.info("message {message_id} requeued: its delivery was interrupted by stop() "
                                     "({error})", message_id=message.id, error=str(exc))
                else:
                    self._stats.incr("messages_failed")
                    self.logger.exception("process_message raised on message {message_id}: {error}; the message "
                                          "is requeued", message_id=message.id, error=f"{type(exc).__name__}: {exc}")
                self._settle(source, message, ok=False)
            else:
                self._stats.incr("messages_processed")
                self._settle(source, message, ok=True)

    def _settle(self, source: Any, message: Message, ok: bool) -> None:
        """ack() or nack() *message*; a source that cannot be reached (Redis restarting) is
        logged, not raised: the loop goes on, and the source redelivers what it did not settle."""
        try:
            if ok:
                source.ack(message)
            else:
                source.nack(message, requeue=True)
        except Exception as exc:
            self.logger.warning("could not settle message {message_id} with its source: {error}; it may be "
                                "delivered again", message_id=message.id, error=f"{type(exc).__name__}: {exc}")

    def loop(self, source: Any, process: Callable[[], None], stop: threading.Event) -> None:
        """The worker's loop job: *process* with *source* bound to *stop*, then idle until *stop*."""
        if source is not None:
            source.bind(stop)  # so that consume() ends when the worker stops
        process()
        # process() may return at once (the reference's `pass`): idle, rather than end or spin.
        stop.wait()

    def drain(self, source: Any, process: Callable[[], None], thread_name: str) -> Tuple[List[Any], Optional[str]]:
        """*process* on a thread of its own until the source goes quiet: (results, why the cycle failed or None)."""
        done = StopSignal()  # ends the cycle: wakes a waiting consume() at once
        cycle = _Cycle(self.clock)

        def loop() -> None:
            _cycles.current = cycle
            try:
                process()
            except Exception:
                cycle.fail("process() raised")
                self.logger.exception("process() raised during run_once")
            finally:
                _cycles.current = None
                cycle.end()

        if source is not None:
            source.bind(done)
        thread = threading.Thread(target=loop, name=thread_name, daemon=True)
        try:
            thread.start()
            cycle.wait_quiet(self.idle_seconds)
        finally:
            done.set()
            thread.join(self.join_timeout)
        if source is not None and not getattr(source, "available", True):
            self.logger.warning("the source was unreachable during run_once")
            cycle.fail("the source was unreachable")
        if thread.is_alive():  # a process() of its own that does not watch the source or stop event
            self.logger.warning("process() did not return after run_once; left running", thread=thread.name)
            cycle.fail("process() did not return")
        return list(cycle.results), cycle.failed


__all__ = ["CycleResult", "ONCE_IDLE_SECONDS", "Relay", "counted", "counted_method"]
