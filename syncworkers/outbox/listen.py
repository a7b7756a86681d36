"""One thread that LISTENs on a PostgreSQL channel and calls back on each notification.

The thread holds one idle connection and sleeps in ``select()`` on it and on a
wake-up socket, so an idle outbox costs no queries and :meth:`Listener.stop`
returns at once. A lost connection is opened again after a pause; the callback
is also called after each (re)connection, since notifications sent meanwhile
were missed.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

#: Seconds between attempts to open the listening connection again after it failed.
RECONNECT_DELAY = 1.0
#: Longest pause between reconnection attempts (the delay doubles up to it).
MAX_RECONNECT_DELAY = 30.0
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 10


class Listener:
    """Calls *callback* (no arguments) whenever *channel* is notified, until :meth:`stop`."""

    def __init__(self, conninfo: str, channel: str, callback: Callable[[], None], *, name: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._callback = callback
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.connected = threading.Event()  #: set while the LISTEN connection is up

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its connection; returns once it ended (or at *timeout*)."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._wake_r.close()
            self._wake_w.close()

    def _run(self) -> None:
        delay = RECONNECT_DELAY
        while not self._stop.is_set():
            try:
                self._listen()
                delay = RECONNECT_DELAY
            except Exception as exc:  # the server went away, a network error: listen again later
                self.connected.clear()
                if self._stop.is_set():
                    break
                logger.warning("outbox listener: connection lost (%s); reconnecting in %.0f s",
                               type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
        self.connected.clear()

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self.connected.set()
            self._notify()  # anything added while we were not listening
            while not self._stop.is_set():
                ready, _, _ = select.select([conn.fileno(), self._wake_r.fileno()], [], [])
                if self._wake_r.fileno() in ready:
                    return
                if any(True for _ in conn.notifies(timeout=0)):
                    self._notify()

    def _notify(self) -> None:
        try:
            self._callback()
        except Exception:
            logger.exception("outbox listener: the callback raised")


class Subscribers:
    """Callbacks to run on each new delivery, and the listener thread that serves them.

    *make_listener* builds a started-later :class:`Listener`-like object calling
    :meth:`notify`; None means notifications come from this process only.
    """

    def __init__(self, make_listener: Optional[Callable[[Callable[[], None]], Any]] = None) -> None:
        self._lock = threading.Lock()
        self._callbacks: "list[Callable[[], None]]" = []
        self._make_listener = make_listener
        self._listener: Any = None

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* on each new delivery until the returned function is called."""
        with self._lock:
            self._callbacks.append(callback)
            if self._listener is None and self._make_listener is not None:
                self._listener = self._make_listener(self.notify)
                self._listener.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
                listener = self._listener if not self._callbacks else None
                if listener is not None:
                    self._listener = None
            if listener is not None:
                listener.stop()

        return unsubscribe

    def notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def close(self) -> None:
        """Forget every callback and stop the listener."""
        with self._lock:
            self._callbacks.clear()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()


__all__ = ["Listener", "Subscribers"]
