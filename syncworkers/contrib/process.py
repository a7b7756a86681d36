"""The app's workers inside a web server process: started once per serving process, at its boot, stopped at exit.

A web app is imported in processes that must not run workers: the reloader's
watcher, gunicorn's master before it forks, ``flask shell``, ``manage.py
migrate``. So nothing starts at import; when the app is built,
:meth:`AppWorkers.boot` asks :mod:`.serving` which part this process plays:
one that serves starts its workers at once, with no request needed; a master
that forks the serving processes (gunicorn ``--preload``) starts them in each
child it forks, right after the fork; any other process starts nothing.
Threads do not survive ``fork()``: a child forked after a start forgets its
parent's workers and sender. Under a server this cannot recognise, the
integrations still start the workers on the first request a process serves.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from typing import Any, Callable, ContextManager, List, Optional

from ..observability.logging import get_logger
from .serving import Role, gunicorn_role
from .settings import Settings, make_runner, make_sender, make_workers

_log = get_logger("syncworkers.contrib")

#: Seconds the exit handler lets in-flight deliveries finish before handing them back to the outbox.
EXIT_TIMEOUT = 10.0


class AppWorkers:
    """One app's sender and workers in the current process (see the module docstring)."""

    def __init__(self, settings: Settings, *, name: str = "app",
                 around: Optional[Callable[[], ContextManager[Any]]] = None,
                 outbox: Optional[Callable[[], Any]] = None) -> None:
        self.settings = settings
        self.name = name
        self._around = around
        # Makes the sender's outbox store (Django's, on its database connections); None: the sender
        # opens settings.outbox itself. A store made here is closed when the workers stop.
        self._make_outbox = outbox
        self._start_in_child = False  # set in a master that forks the serving processes
        self._reset()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._sender: Any = None
        self._outbox: Any = None
        self._workers: List[Any] = []
        self._runner: Any = None
        self._exit_hook = False

    @property
    def sender(self) -> Any:
        """This process's WebhookSenderWorker, built from the settings on first use."""
        sender = self._sender
        if sender is None:
            with self._lock:
                if self._sender is None:
                    self._sender = self._new_sender()
                sender = self._sender
        return sender

    def _new_sender(self) -> Any:
        if self._make_outbox is None:
            return make_sender(self.settings)
        if self._outbox is None:
            self._outbox = self._make_outbox()
        return make_sender(self.settings, outbox=self._outbox)

    @property
    def running(self) -> bool:
        runner = self._runner
        return runner is not None and runner.running

    def build(self) -> List[Any]:
        """The workers to run: the configured ones, then the sender (it delivers the outbox)."""
        return make_workers(self.settings) + [self.sender]

    def ensure_started(self) -> bool:
        """Start the workers in this process unless they run already; True when this call started them."""
        if self._runner is not None:  # the fast path of every request
            return False
        with self._lock:
            if self._runner is not None:
                return False
            workers = make_workers(self.settings)
            if self._sender is None:
                self._sender = self._new_sender()
            workers.append(self._sender)
            runner = make_runner([_wrap(w, self._around) for w in workers], self.settings,
                                 name=f"{self.name}-{os.getpid()}")
            runner.start()
            self._workers, self._runner = workers, runner
            if not self._exit_hook:
                atexit.register(self.stop, EXIT_TIMEOUT)
                self._exit_hook = True
        _log.info("workers started", pid=os.getpid(), pool=runner.max_workers, **self.settings.describe())
        return True

    def boot(self, role: Optional[Role]) -> bool:
        """Start the workers if this process serves (*role* from :func:`.serving.role`), or arrange
        that each serving process this master forks starts them; True when started here and now."""
        if role is Role.SERVES:
            return self.ensure_started()
        if role is Role.FORKS:
            self._start_in_child = True
        return False

    def stop(self, timeout: Optional[float] = EXIT_TIMEOUT) -> bool:
        """Stop this process's workers (in-flight deliveries get *timeout*), release connections."""
        with self._lock:
            runner, workers, sender, outbox = self._runner, self._workers, self._sender, self._outbox
            self._runner, self._workers, self._sender, self._outbox = None, [], None, None
        ended = True
        if runner is not None:
            ended = runner.stop(timeout)
        if sender is not None:
            # The sender's delivery pool is its own: drain it within the timeout too, then
            # hand back what is still on the wire (it stays pending in the outbox).
            ended = sender.stop(timeout) and ended
        for worker in workers or [sender]:
            if worker is not None:
                worker.close()
        if outbox is not None:
            outbox.close()
        return ended


def _wrap(worker: Any, around: Optional[Callable[[], ContextManager[Any]]]) -> Any:
    if around is None:
        return worker
    from ..cli import AroundJobs

    return AroundJobs(worker, around)


def _after_fork(ref: "weakref.ReferenceType[AppWorkers]") -> None:
    # The parent's threads are gone in the child and its locks may be held by one of
    # them: forget all of it (without closing: the parent still uses its connections).
    state = ref()
    if state is None:
        return
    state._reset()
    start, state._start_in_child = state._start_in_child, False  # a fork of this child starts nothing
    # Only a serving process forked by the master: not a fork the master makes for anything else.
    if start and gunicorn_role(sys._getframe(1)) is Role.SERVES:
        try:
            state.ensure_started()
        except Exception:  # an at-fork hook cannot raise: the process serves on, and says why
            _log.exception("workers not started after fork", pid=os.getpid())


__all__ = ["AppWorkers", "EXIT_TIMEOUT"]
