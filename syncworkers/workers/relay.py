"""The relay half of a webhook sender: consume a message source, one delivery per message.

:class:`RelayMixin` gives :class:`~syncworkers.workers.webhook.WebhookSenderWorker` its
``process()`` main loop (consume ``self.source``, ack or nack each message) and the
source-draining part of ``run_once()``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..exceptions import DeliveryError
from ..message import Message
from ..signals import StopSignal

if TYPE_CHECKING:  # pragma: no cover
    from ..config.settings import WebhookConfig
    from ..observability.logging import StructuredLogger
    from ..delivery.request import DeliveryResult
    from ..observability.metrics import Metrics

#: run_once(): seconds without a new message after which the source counts as drained.
ONCE_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class CycleResult:
    """What one ``run_once()`` cycle of a sender did; ``ok`` drives ``syncworkers run --once``."""

    ok: bool  #: no message raised, no delivery died or stayed pending, the source was reachable
    results: List[Any] = field(default_factory=list)  #: what process_message returned, per message
    error: Optional[str] = None  #: why the cycle is not ok


class RelayMixin:
    """``process()``, ``process_message()`` and draining the source for ``run_once()``."""

    #: A message source for :meth:`process` (MemoryQueue, RedisListConsumer, ...); read at start.
    source: Any = None

    if TYPE_CHECKING:  # provided by the worker
        name: str
        logger: StructuredLogger
        _stats: Metrics
        webhook_config: WebhookConfig

        @property
        def stop_event(self) -> StopSignal: ...

        def deliver(self, endpoint: str, data: Any, headers: Any = None, *,
                    delivery_id: Optional[str] = None, cancel: Optional[threading.Event] = None) -> DeliveryResult: ...

    def _relays(self) -> bool:
        """Whether there is a main loop to run: a source, or a process() of the subclass's own."""
        return self.source is not None or type(self).process is not RelayMixin.process

    def process(self) -> None:
        """The worker's main loop: consume ``self.source`` until stopped.

        Each message goes to :meth:`process_message`, then is ack'ed; if
        process_message raises, it is logged with its traceback and nack'ed
        (requeued) and the loop goes on. Override to run your own loop; if it
        returns before stop(), the worker idles until stopped.
        """
        source = self.source
        if source is None:
            return
        for message in source.consume():
            try:
                self.process_message(message)
            except Exception as exc:
                if isinstance(exc, DeliveryError) and self.stop_event.is_set():
                    # process_message's documented way to hand a message back on stop: not an error.
                    self.logger.info("delivery interrupted by stop; message requeued", message_id=message.id,
                                     error=str(exc))
                else:
                    self._stats.incr("messages_failed")
                    self.logger.exception("process_message raised; message requeued", message_id=message.id)
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
            self.logger.warning("could not settle message with its source; it may be delivered again",
                                message_id=message.id, error=f"{type(exc).__name__}: {exc}")

    def process_message(self, message: Message) -> Optional[bool]:
        """Handle one message of ``self.source`` (override to route messages your way).

        By default the message is sent to ``message.headers["endpoint"]`` (its
        body, its id as webhook id) and the result returned; a message without
        that header is logged and skipped (None). A delivery interrupted by
        stop() raises DeliveryError, so that the message is requeued, not lost.
        """
        endpoint = message.headers.get("endpoint")
        if not endpoint:
            self.logger.warning("message has no 'endpoint' header; skipped", message_id=message.id)
            return None
        result = self.deliver(endpoint, message.body, delivery_id=message.id)
        if not result.ok and self.stop_event.is_set():
            raise DeliveryError(f"delivery interrupted by stop: {result.error}", url=result.url,
                                attempts=result.attempts)
        return result.ok

    def _drain_source(self) -> Tuple[List[Any], Optional[str]]:
        """process() on a thread until the source goes quiet; (results, why the cycle failed or None)."""
        done = StopSignal()  # ends the cycle: wakes a waiting consume() at once
        results: List[Any] = []
        state: Dict[str, Any] = {"busy": 0, "last": time.monotonic(), "failed": None}
        lock = threading.Lock()
        handle = self.process_message

        def tracked(message: Message) -> Any:  # shadows the method while the cycle runs
            with lock:
                state["busy"] += 1
            try:
                result = handle(message)
            except Exception:
                state["failed"] = state["failed"] or "process_message raised"
                raise
            finally:
                with lock:
                    state["busy"] -= 1
                    state["last"] = time.monotonic()
            results.append(result)
            return result

        def loop() -> None:
            try:
                self.process()
            except Exception:
                state["failed"] = state["failed"] or "process() raised"
                self.logger.exception("process() raised during run_once")

        if self.source is not None:
            self.source.bind(done)
        self.process_message = tracked  # type: ignore[method-assign]
        thread = threading.Thread(target=loop, name=f"syncworkers-once-{self.name}", daemon=True)
        try:
            thread.start()
            while thread.is_alive():
                with lock:
                    quiet = state["busy"] == 0 and time.monotonic() - state["last"] >= ONCE_IDLE_SECONDS
                if quiet:
                    break
                thread.join(0.05)
        finally:
            done.set()
            thread.join(self.webhook_config.timeout)
            del self.process_message
        if self.source is not None and not getattr(self.source, "available", True):
            self.logger.warning("the source was unreachable during run_once")
            state["failed"] = state["failed"] or "the source was unreachable"
        if thread.is_alive():  # a process() of its own that does not watch the source or stop event
            self.logger.warning("process() did not return after run_once; left running", thread=thread.name)
            state["failed"] = state["failed"] or "process() did not return"
        return results, state["failed"]

    def _run_process(self, stop_event: threading.Event) -> None:
        source = self.source
        if source is not None:
            source.bind(stop_event)  # so that consume() ends when the worker stops
        self.process()
        # process() may return at once (the reference's `pass`): idle, rather than end or spin.
        stop_event.wait()


__all__ = ["CycleResult", "ONCE_IDLE_SECONDS", "RelayMixin"]
