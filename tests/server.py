"""A real HTTP/1.1 server on 127.0.0.1 for the tests: threaded, keep-alive, TCP_NODELAY.

Routes are scripted per (method, path)::

    with LoopbackServer() as srv:
        srv.route("GET", "/items", json=[1, 2])
        srv.route("POST", "/hook", status=[503, 503, 200])     # one status per call, last repeats
        srv.route("GET", "/slow", delay=0.2)
        srv.route("GET", "/custom", handler=lambda req: Reply(418, b"teapot"))
        requests.get(srv.url("/items"))
        srv.requests  # every Request received, in order

Nothing is mocked: the client under test talks TCP to this server.
"""

from __future__ import annotations

import json as jsonlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple, Union


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: Dict[str, str]
    body: bytes
    connection: int  # id of the TCP connection it came on (to observe keep-alive)
    received_at: float  # time.monotonic()

    def json(self):
        return jsonlib.loads(self.body)

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class Reply:
    status: int = 200
    body: Union[bytes, str] = b""
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: "close" (close without answering), "reset" (RST), "stall" (hold until the server stops)
    fault: Optional[str] = None


Handler = Callable[[Request], Reply]


class _Route:
    def __init__(self, handler: Optional[Handler], replies: List[Reply]):
        self.handler = handler
        self.replies = replies
        self.calls = 0
        self.lock = threading.Lock()

    def next(self, req: Request) -> Reply:
        with self.lock:
            n = self.calls
            self.calls += 1
        if self.handler is not None:
            return self.handler(req)
        return self.replies[min(n, len(self.replies) - 1)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.owner._lock:
            self.server.owner._connections += 1
            self._conn_id = self.server.owner._connections
            self.server.owner._open_sockets.add(self.connection)
            if isinstance(self.connection, ssl.SSLSocket):
                self.server.owner.peer_certs.append(self.connection.getpeercert())

    def finish(self) -> None:
        with self.server.owner._lock:
            self.server.owner._open_sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-body (e.g. killed): no request to answer
            self.close_connection = True
            return
        target = self.path
        if "://" in target:  # absolute-form: the client takes this server for a proxy
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        req = Request(self.command, path, query, dict(self.headers.items()), body,
                      self._conn_id, time.monotonic())
        with owner._lock:
            owner.requests.append(req)
            route = owner._routes.get((self.command, path)) or owner._routes.get(("*", path))
        reply = route.next(req) if route else Reply(404, b"no route")
        if reply.delay:
            owner.stopping.wait(reply.delay)
        if reply.fault == "stall":
            owner.stopping.wait()
            self.close_connection = True
            return
        if reply.fault in ("close", "reset"):
            if reply.fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.close()
            return
        data = reply.body.encode() if isinstance(reply.body, str) else reply.body
        self.send_response(reply.status)
        headers = {k.lower(): v for k, v in reply.headers.items()}
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if "content-length" not in headers:
            self.send_header("Content-Length", str(len(data)) if reply.status not in (204, 304) else "0")
        self.end_headers()
        if self.command != "HEAD" and reply.status not in (204, 304):
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    owner: "LoopbackServer"

    def handle_error(self, request, client_address) -> None:
        # Clients under test hang up on purpose (timeouts, fail_fast): not worth a traceback.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A scripted HTTP/1.1 server on 127.0.0.1 (an ephemeral port), used as a context manager."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        self._lock = threading.Lock()
        self.peer_certs: List[dict] = []
        self.scheme = "https" if tls else "http"
        self._routes: Dict[Tuple[str, str], _Route] = {}
        self._connections = 0
        self._open_sockets: set = set()
        self.requests: List[Request] = []
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: Optional[threading.Thread] = None

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, *, status: Union[int, List[int]] = 200,
              body: Union[bytes, str] = b"", json=None, headers: Optional[Dict[str, str]] = None,
              delay: float = 0.0, handler: Optional[Handler] = None,
              replies: Optional[List[Reply]] = None) -> None:
        """Script (method, path): a handler, a list of replies, or statuses (one per call, the last repeats)."""
        if replies is None:
            hdrs = dict(headers or {})
            if json is not None:
                body = jsonlib.dumps(json).encode()
                hdrs.setdefault("Content-Type", "application/json")
            statuses = status if isinstance(status, list) else [status]
            replies = [Reply(s, body, hdrs, delay) for s in statuses]
        with self._lock:
            self._routes[(method.upper(), path)] = _Route(handler, replies)

    def calls(self, path: str, method: Optional[str] = None) -> List[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    @property
    def connections(self) -> int:
        """How many TCP connections the server has accepted."""
        return self._connections

    def start(self) -> "LoopbackServer":
        # shutdown() returns once serve_forever looks at its flag: a short poll keeps every teardown short.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"loopback-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:  # wake handler threads blocked on idle keep-alive reads
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
