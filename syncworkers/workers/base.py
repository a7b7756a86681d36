"""HTTPWorker: the lifecycle and shared parts of every HTTP worker."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

from ..observability import events
from ..config.settings import HTTPClientConfig
from ..exceptions import ConfigError, WorkerError
from ..http.client import HTTPClient
from ..observability.logging import StructuredLogger, get_logger
from ..observability.process_hooks import install
from ..observability.metrics import Metrics
from ..observability.redaction import Redactor
from ..scheduling.jobs import Job, PeriodicJob
from ..scheduling.runner import Runner
from ..signals import StopSignal


class HTTPWorker:
    """Base of PollerWorker and WebhookSenderWorker.

    Owns one :class:`~syncworkers.http.client.HTTPClient` (``self.client``), a
    structured ``self.logger`` and ``self.metrics``. Lifecycle:

    * ``start()`` runs the worker in the background (its own Runner);
      ``stop(timeout)`` stops it promptly, whatever its interval;
    * ``run_sync()`` blocks until stopped (SIGINT/SIGTERM stop it on the main thread);
    * ``startup()`` / ``shutdown()`` are hooks for subclasses, called once per run;
    * several workers share one pool and timer with ``Runner([w1, w2, ...])``.

    ``self.metrics`` may be replaced by a subclass (the reference examples put a
    dict there); the worker keeps counting into its own :class:`Metrics`.
    """

    #: Threads that will share this worker's HTTP client (sizes its pool).
    client_threads = 1

    def __init__(self, http_config: Optional[HTTPClientConfig] = None, *, name: Optional[str] = None,
                 client_config: Optional[HTTPClientConfig] = None, redactor: Optional[Redactor] = None) -> None:
        install()  # the process-wide hooks (idempotent): here, never at import
        module = type(self).__module__
        # Users' subclasses log under syncworkers.<their module>, so configure_logging reaches them.
        logger_name = module if module.startswith("syncworkers.") else f"syncworkers.{module}"
        #: The secrets this worker knows (its client's credentials, headers, signing secrets): what
        #: its logger, its client and urllib3's log lines mask.
        self.redactor = redactor if redactor is not None else Redactor()
        self.logger: StructuredLogger = get_logger(logger_name, redactor=self.redactor)
        self._stats: Metrics = Metrics()
        self.name = name or type(self).__name__
        self.metrics: Any = self._stats
        # The stop signal of the current run: a Runner's once one drives the worker, else the
        # worker's own for direct use. Waits are on it; it is set, never swapped, while a run lasts.
        self._stop_event = StopSignal()
        self.http_config = client_config or HTTPClientConfig.resolve(http_config)
        self.client: HTTPClient = HTTPClient(self.http_config, threads=self.client_threads, logger=self.logger,
                                             redactor=self.redactor)
        self._runner: Optional[Runner] = None
        self._own_runner: Optional[Runner] = None  # from start(), or run_sync() while it blocks
        self._lock = threading.RLock()
        # stop() found nothing running: the next run_sync() returns at once, as it may be a
        # Thread(target=worker.run_sync) that had not got going yet.
        self._stop_pending = False
        events.track(self)  # found by exporters that read state at scrape time

    @property
    def name(self) -> str:
        """The worker's identity: in logs and metrics, and its jobs' names in a Runner
        (with coordination, the same name in every process means the same job)."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"name must be a non-empty string, got {value!r}", {"name": "must be a non-empty string"})
        self._name = value
        self.logger = self.logger.bind(worker=value)
        self._stats.labels["worker"] = value

    # -- hooks for subclasses ---------------------------------------------------------

    def startup(self) -> None:
        """Called once before the worker's jobs start (override; no need to call super)."""

    def shutdown(self) -> None:
        """Called once after the worker's jobs ended (override; no need to call super)."""

    def jobs(self) -> List[Job]:
        """What a Runner should run for this worker."""
        return []

    # -- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        runner = self._runner
        return runner is not None and runner.running and not self._stop_event.is_set()

    @property
    def stop_event(self) -> StopSignal:
        """The current run's stop signal: set when the worker is asked to stop; long loops wait on it."""
        return self._stop_event

    def start(self) -> "HTTPWorker":
        """Run in the background (a Runner of its own); returns at once."""
        with self._lock:
            if self.running:
                raise WorkerError(f"{self.name} is already running")
            runner = Runner([self], max_workers=self._runner_threads(), name=self.name)
            self._own_runner = runner
            self._stop_pending = False
            runner.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop: interrupt waits, let in-flight work finish up to *timeout*; True if all ended.

        Stops the Runner of ``start()`` or ``run_sync()``. A worker driven by a
        shared Runner is stopped with that Runner. On a worker that is not
        running, the next ``run_sync()`` returns at once (it may be on its way in
        another thread); a later ``start()`` runs as usual.
        """
        with self._lock:
            runner = self._own_runner
            if runner is None:
                shared = self._runner
                if shared is not None and shared.running:
                    raise WorkerError(f"{self.name} runs in a shared Runner: stop that Runner instead")
                self._stop_pending = True
                self._stop_event.set()
                return True
        ended = runner.stop(timeout)
        with self._lock:
            if self._own_runner is runner:
                self._own_runner = None
        return ended

    def run_sync(self) -> None:
        """Block until stopped; on the main thread SIGINT and SIGTERM stop it cleanly."""
        runner = Runner([self], max_workers=self._runner_threads(), name=self.name)
        with self._lock:
            if self.running:
                raise WorkerError(f"{self.name} is already running")
            if self._stop_pending:  # stop() won the race with this call
                self._stop_pending = False
                return
            self._own_runner = runner  # so that stop() from another thread reaches it
        try:
            runner.run()
        finally:
            with self._lock:
                if self._own_runner is runner:
                    self._own_runner = None

    def _direct_run(self) -> StopSignal:
        """The stop signal for a cycle asked for directly (``poll()``, ``flush()``, ``run_once()``).

        While a run lasts, its own. After a run ended, the cycle is a run of its own with
        a new signal, so its retries are not cut short by the finished run's stop.
        """
        with self._lock:
            if self._stop_event.is_set() and not self.running and self._own_runner is None:
                self._stop_event = StopSignal()
            return self._stop_event

    def close(self) -> None:
        """Stop (unless a shared Runner drives the worker) and release connections."""
        shared = self._runner is not None and self._runner.running and self._own_runner is None
        if not shared:
            self.stop()
        self.client.close()

    def __enter__(self) -> "HTTPWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _runner_threads(self) -> int:
        return max(1, len([j for j in self.jobs() if isinstance(j, PeriodicJob)]))

    def _bind_runner(self, runner: Runner) -> None:
        """Called by a Runner before startup(): its stop signal is this run's, for every wait."""
        self._runner = runner
        stop = runner.stop_event
        self._stop_event = stop if isinstance(stop, StopSignal) else StopSignal.any(stop)

    # -- observability ----------------------------------------------------------------

    def not_ready_reasons(self) -> List[str]:
        """Why this worker cannot do its work now (empty: ready); subclasses add their own reasons.

        Here: an open circuit (calls to that host fail at once). A half-open one
        lets a probe through, so it counts as ready.
        """
        return [f"circuit open for {key}" for key, state in self.client.breakers.states().items()
                if state == "open"]

    def ready(self) -> bool:
        """True when nothing stops the worker from doing its work (see ``not_ready_reasons()``)."""
        return not self.not_ready_reasons()

    def _healthy(self, reasons: List[str]) -> bool:
        """Whether the worker works as it should; by default, when it is ready."""
        return not reasons

    def health(self) -> Dict[str, Any]:
        """A plain dict of the same shape for every worker (datetimes are aware UTC).

        ``healthy``, ``ready`` with ``reasons`` (why not), ``status`` (``ok``;
        ``degraded``: ready but not healthy, e.g. the last poll failed; ``failing``:
        not ready), ``running``, ``circuits`` (state by host), ``counters``,
        ``latencies`` (each name ends in its unit, ``_ms`` or ``_seconds``: count,
        avg, max, p50, p99) and ``metrics`` (counters and latencies together).
        """
        reasons = self.not_ready_reasons()
        healthy = self._healthy(reasons)
        return {
            "worker": self.name,
            "type": type(self).__name__,
            "running": self.running,
            "healthy": healthy,
            "ready": not reasons,
            "reasons": reasons,
            "status": "failing" if reasons else "ok" if healthy else "degraded",
            "circuits": self.client.breakers.states(),
            "counters": self._stats.counters(),
            "latencies": self._stats.summaries(),
            "metrics": self._stats.snapshot(),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} running={self.running} client={self.client!r}>"


__all__ = ["HTTPWorker", "Job"]  # Job: what jobs() returns, for the workers built on this one
