"""Many transfers in flight from one thread: libcurl's multi interface, driven by one I/O thread.

:meth:`CurlMulti.submit` hands a :class:`~syncworkers.http.messages.Request` over
and returns a ``Future`` of its :class:`~syncworkers.http.messages.Response` (or
of the same exception the blocking transport raises). The I/O thread owns the
multi handle and every easy handle while it is in a transfer — libcurl's rule —
and waits on libcurl's sockets with the selector of the platform (epoll), so 1,024
transfers in flight cost one thread and no more CPU each than a few. It also runs
short callbacks at a given time (:meth:`call_later`: retry waits of
HTTPClient's calls) and soon (:meth:`call_soon`). No asyncio.

The thread starts with the first transfer and ends after ``linger`` seconds with
nothing to do, or after :meth:`close` once the transfers in flight have ended.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Tuple

import pycurl  # type: ignore[import-untyped]

from ...exceptions import TransportError
from ..messages import Request, Response
from .curl import CurlTransport, Slot

#: Seconds the I/O thread stays with nothing to do before it ends.
LINGER = 1.0


class _Transfer:
    __slots__ = ("request", "url", "future", "slot", "read_bound")

    def __init__(self, request: Request, url: str, future: "Future[Response]") -> None:
        self.request = request
        self.url = url
        self.future = future
        self.slot: Optional[Slot] = None
        self.read_bound = False


class CurlMulti:
    """Drives the transfers of one :class:`~syncworkers.http.transport.curl.CurlTransport` from one thread."""

    def __init__(self, transport: CurlTransport, *, name: str = "syncworkers-curl-multi",
                 linger: float = LINGER, clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.name = name
        self.linger = linger
        self.clock = clock
        self._lock = threading.Lock()
        self._incoming: List[_Transfer] = []
        self._soon: List[Callable[[], None]] = []
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []  # heap, I/O thread only
        self._later: List[Tuple[float, Callable[[], None]]] = []  # from other threads, moved to the heap
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._asleep = False  # the thread may be in select(): a new item must wake it
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._active: Dict[Any, _Transfer] = {}  # easy handle -> transfer (I/O thread only)
        self._in_flight = 0

    # -- from any thread -----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Transfers submitted and not finished."""
        return self._in_flight

    def submit(self, request: Request, url: str) -> "Future[Response]":
        """Start sending *request* (errors name *url*); the future ends with its response or error."""
        future: "Future[Response]" = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                future.set_exception(TransportError("the client is closed", url=url, method=request.method))
                return future
            self._incoming.append(_Transfer(request, url, future))
            self._in_flight += 1
            self._ensure_thread()
            wake = self._asleep
            self._asleep = False
        if wake:
            self._wake()
        return future

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run *callback* on the I/O thread soon (it must not block); here and now once closed and ended."""
        self._queue(None, callback)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> None:
        """Run *callback* on the I/O thread in *seconds* (it must not block); once closed, soon."""
        self._queue(max(0.0, seconds), callback)

    def _queue(self, seconds: Optional[float], callback: Callable[[], None]) -> None:
        with self._lock:
            inline = self._closed and self._thread is None  # closed and ended: nothing else will run it
            if not inline:
                if seconds is None or self._closed:
                    self._soon.append(callback)
                else:
                    self._later.append((self.clock() + seconds, callback))
                self._ensure_thread()
                wake = self._asleep
                self._asleep = False
        if inline:
            self._call(callback)
        elif wake:
            self._wake()

    def close(self) -> None:
        """Take no more transfers (a later submit fails at once) and run every timer now; the thread
        ends when the transfers in flight have (each within its deadline), as a thread inside a
        blocking request would."""
        with self._lock:
            self._closed = True
            wake = self._thread is not None
        if wake:
            self._wake()

    def _ensure_thread(self) -> None:
        if self._thread is None:  # (under the lock)
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # full (the thread is awake anyway) or closed

    # -- the I/O thread -------------------------------------------------------------------

    def _run(self) -> None:
        multi = pycurl.CurlMulti()
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        timer: List[Optional[float]] = [None]  # when libcurl wants socket_action(SOCKET_TIMEOUT)

        def on_socket(what: int, fd: int, multi_: Any, data: Any) -> None:
            events = 0
            if what in (pycurl.POLL_IN, pycurl.POLL_INOUT):
                events |= selectors.EVENT_READ
            if what in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
                events |= selectors.EVENT_WRITE
            try:
                if what == pycurl.POLL_REMOVE or not events:
                    selector.unregister(fd)
                else:
                    try:
                        selector.modify(fd, events)
                    except KeyError:
                        selector.register(fd, events)
            except (KeyError, ValueError, OSError):
                pass  # closed already

        def on_timer(ms: int) -> None:
            timer[0] = None if ms < 0 else self.clock() + ms / 1000.0

        multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)
        idle_since: Optional[float] = None
        idle_exit = False
        try:
            while True:
                incoming, soon = self._take()
                for transfer in incoming:
                    self._start(multi, transfer)
                for callback in soon:
                    self._call(callback)
                closed = self._closed_now()
                self._run_timers(closed)
                if closed and not self._active and not self._pending_calls():
                    break
                busy = bool(self._active or self._timers)
                now = self.clock()
                if busy:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= self.linger and self._quit_if_idle():
                    idle_exit = True  # nothing in flight, and a new thread may start at once: touch nothing
                    return
                wait = self._wait(timer[0], now, busy)
                with self._lock:
                    self._asleep = True
                    if self._incoming or self._soon or self._later or self._closed:
                        wait = 0.0
                for key, mask in selector.select(wait):
                    if key.fileobj is self._wake_r:
                        self._drain_wakeups()
                        continue
                    flags = 0
                    if mask & selectors.EVENT_READ:
                        flags |= pycurl.CSELECT_IN
                    if mask & selectors.EVENT_WRITE:
                        flags |= pycurl.CSELECT_OUT
                    self._act(multi, key.fd, flags)
                with self._lock:
                    self._asleep = False
                if timer[0] is not None and self.clock() >= timer[0]:
                    timer[0] = None
                    self._act(multi, pycurl.SOCKET_TIMEOUT, 0)
                self._collect(multi)
        finally:
            if idle_exit:
                multi.close()
                selector.close()
            else:
                self._shut(multi, selector)

    def _take(self) -> Tuple[List[_Transfer], List[Callable[[], None]]]:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            soon, self._soon = self._soon, []
            later, self._later = self._later, []
        for due, callback in later:
            heapq.heappush(self._timers, (due, next(self._seq), callback))
        return incoming, soon

    def _closed_now(self) -> bool:
        with self._lock:
            return self._closed

    def _quit_if_idle(self) -> bool:
        with self._lock:
            if self._incoming or self._soon or self._later:
                return False
            self._thread = None  # the next submit starts a new thread
            return True

    def _wait(self, curl_due: Optional[float], now: float, busy: bool) -> float:
        dues = [d for d in (curl_due, self._timers[0][0] if self._timers else None) if d is not None]
        if dues:
            return max(0.0, min(dues) - now)
        return 1.0 if busy else self.linger

    def _pending_calls(self) -> bool:
        with self._lock:
            return bool(self._incoming or self._soon or self._later or self._timers)

    def _run_timers(self, all_now: bool = False) -> None:
        now = self.clock()
        while self._timers and (all_now or self._timers[0][0] <= now):
            _, _, callback = heapq.heappop(self._timers)
            self._call(callback)

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # a callback's bug must not end the thread every transfer depends on
            import logging

            logging.getLogger(__name__).exception("a callback on the libcurl multi thread raised")

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _start(self, multi: Any, transfer: _Transfer) -> None:
        slot = self.transport.borrow()
        try:
            transfer.read_bound = self.transport.setup(slot, transfer.request, transfer.url)
            multi.add_handle(slot.curl)
        except Exception as exc:  # refused by the SSRF guard, or a bad option: nothing was sent
            self.transport.give_back(slot)
            self._settle(transfer, error=exc)
            return
        transfer.slot = slot
        self._active[slot.curl] = transfer

    def _act(self, multi: Any, fd: int, flags: int) -> None:
        while True:
            ret, _ = multi.socket_action(fd, flags)
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                return

    def _collect(self, multi: Any) -> None:
        while True:
            queued, done, failed = multi.info_read()
            for curl in done:
                self._end(multi, curl, None)
            for curl, code, message in failed:
                self._end(multi, curl, pycurl.error(code, message))
            if not queued:
                return

    def _end(self, multi: Any, curl: Any, error: Optional[pycurl.error]) -> None:
        transfer = self._active.pop(curl, None)
        multi.remove_handle(curl)
        if transfer is None or transfer.slot is None:
            return
        slot, transport = transfer.slot, self.transport
        try:
            if error is not None:
                failure = transport.error(error, slot, transfer.request, transfer.read_bound, transfer.url)
                self._settle(transfer, error=failure)
            else:
                self._settle(transfer, response=transport.finish(slot, transfer.request, transfer.url))
        except Exception as exc:
            self._settle(transfer, error=exc)
        finally:
            transport.give_back(slot)

    def _settle(self, transfer: _Transfer, response: Optional[Response] = None,
                error: Optional[BaseException] = None) -> None:
        with self._lock:
            self._in_flight -= 1
        if error is not None:
            transfer.future.set_exception(error)
        else:
            transfer.future.set_result(response)  # type: ignore[arg-type]

    def _shut(self, multi: Any, selector: selectors.BaseSelector) -> None:
        """Fail what is left (closed), give the handles back, close the multi handle."""
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None
            incoming, self._incoming = self._incoming, []
            self._soon, self._later = [], []
        self._timers = []
        for curl, transfer in list(self._active.items()):
            multi.remove_handle(curl)
            if transfer.slot is not None:
                self.transport.give_back(transfer.slot)
            self._settle(transfer, error=TransportError("the client closed while the request was in flight",
                                                        url=transfer.url, method=transfer.request.method))
        self._active.clear()
        for transfer in incoming:
            self._settle(transfer, error=TransportError("the client is closed", url=transfer.url,
                                                        method=transfer.request.method))
        multi.close()
        selector.close()
        with self._lock:
            closed = self._closed
        if closed:
            for sock in (self._wake_r, self._wake_w):
                sock.close()


__all__ = ["CurlMulti", "LINGER"]
