"""The operations endpoints of ``syncworkers run --metrics-port``: /metrics, /livez, /readyz.

A stdlib ``ThreadingHTTPServer`` on a thread of its own (``syncworkers-ops``),
bound to 127.0.0.1 unless told otherwise, started before the Runner and stopped
after it.

* ``/metrics``: the Prometheus text exposition (503 without prometheus_client);
* ``/livez``: 200 while the Runner runs and its timer thread is alive, else 503;
* ``/readyz``: 200 when every worker is ready, else 503; the JSON body names
  each worker and why it is not ready (open circuit, failing polls, outbox unreachable).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config.validators import checked, count
from ..exceptions import ConfigError

logger = logging.getLogger(__name__)

#: Where the endpoints listen unless told otherwise: not reachable from other machines.
DEFAULT_HOST = "127.0.0.1"
#: Seconds stop() waits for the server thread.
STOP_TIMEOUT = 5.0

Answer = Tuple[int, str, bytes]


def _json(status: int, data: Dict[str, Any]) -> Answer:
    return status, "application/json", (json.dumps(data, sort_keys=True) + "\n").encode()


class OpsServer:
    """Serves /metrics, /livez and /readyz for *runner* and its *workers*.

    ``port=0`` picks a free port (see :attr:`port` once started). ``registry``
    is the prometheus_client registry to expose (default: the default registry).
    """

    def __init__(self, runner: Any, workers: Sequence[Any], *, host: str = DEFAULT_HOST, port: int = 0,
                 registry: Any = None) -> None:
        port = checked("metrics port", port, count(minimum=0, maximum=65535, text=False))
        if not isinstance(host, str) or not host:
            raise ConfigError(f"metrics host must be a host name or address, got {host!r}",
                              {"host": "must be a host name or address"})
        self.runner = runner
        self.workers = list(workers)
        self.host = host
        self.port = port
        self.registry = registry
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "OpsServer":
        """Bind and serve on a thread; ConfigError when the address cannot be bound."""
        ops = self

        class Handler(_Handler):
            server_ops = ops

        try:
            server = ThreadingHTTPServer((self.host, self.port), Handler)
        except (OSError, OverflowError) as exc:
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="syncworkers-ops", daemon=True)
        self._thread.start()
        logger.info("serving /metrics, /livez and /readyz on %s", self.url)
        if importlib.util.find_spec("prometheus_client") is None:
            logger.warning("/metrics answers 503: pip install 'syncworkers[prometheus]' for Prometheus metrics")
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving and close the socket; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever() has
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> "OpsServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the answers -----------------------------------------------------------

    def metrics(self) -> Answer:
        try:
            from .prometheus import exposition
        except ImportError:
            return 503, "text/plain; charset=utf-8", (
                b"prometheus_client is not installed: pip install 'syncworkers[prometheus]'\n")
        body, content_type = exposition(self.registry)
        return 200, content_type, body

    def livez(self) -> Answer:
        stats = self.runner.stats
        alive = bool(stats["running"] and stats["threads"]["timer"])
        return _json(200 if alive else 503, {"alive": alive})

    def readyz(self) -> Answer:
        reports: List[Dict[str, Any]] = []
        for worker in self.workers:
            try:
                reasons = list(worker.not_ready_reasons())
            except Exception as exc:  # a subclass's check: not ready, and say so
                logger.exception("readiness check of %s raised", getattr(worker, "name", worker))
                reasons = [f"readiness check raised {type(exc).__name__}"]
            reports.append({"worker": worker.name, "ready": not reasons, "reasons": reasons})
        ready = all(report["ready"] for report in reports)
        data: Dict[str, Any] = {"ready": ready, "workers": reports}
        if not self.runner.running:
            ready = data["ready"] = False
            data["reasons"] = ["the runner is not running"]
        return _json(200 if ready else 503, data)


class _Handler(BaseHTTPRequestHandler):
    server_ops: OpsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        routes = {"/metrics": self.server_ops.metrics, "/livez": self.server_ops.livez,
                  "/readyz": self.server_ops.readyz}
        route = routes.get(path)
        if route is None:
            answer: Answer = (404, "text/plain; charset=utf-8", b"not found: try /metrics, /livez or /readyz\n")
        else:
            try:
                answer = route()
            except Exception:
                logger.exception("%s failed", path)
                answer = (500, "text/plain; charset=utf-8", b"internal error\n")
        status, content_type, body = answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("ops request: " + format, *args)


__all__ = ["DEFAULT_HOST", "OpsServer"]
