"""Benchmark receivers on 127.0.0.1, each in a process of its own.

* :class:`NginxReceiver` — Debian's nginx answering ``204`` to anything, from a
  config generated in a temp dir (the fast receiver when nginx is installed); with
  Debian's echo module (``libnginx-mod-http-echo``) it also plays the scripted paths
  below, the latency receiver that costs the client's cores least.
* :class:`PythonReceiver` — a single-threaded ``selectors`` HTTP/1.1 keep-alive
  server (``python scripts/receivers.py serve``): the fallback fast receiver and
  the latency-bound one. The path scripts the answer, so one server can play
  many endpoints::

      /anything                   204 at once
      /delay/50/anything          204 after 50 ms
      /status/400/anything        400 at once
      /delay/200/status/500/x     500 after 200 ms

A separate process keeps the receiver's CPU out of the client's measurements.
Both stop on ``stop()`` / context exit, and die with their parent's stdin.
"""

from __future__ import annotations

import argparse
import heapq
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
#: Debian's echo module (echo_sleep): nginx answers after a delay without a thread per request.
ECHO_MODULE_CANDIDATES = ("/usr/lib/nginx/modules/ngx_http_echo_module.so",
                          "/usr/local/nginx/modules/ngx_http_echo_module.so")
#: The delays (ms) the scripted nginx plays; the Python receiver plays any.
NGINX_DELAYS_MS = (10, 50, 200, 2000)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: Largest request the Python receiver accepts (a benchmark webhook is small).
MAX_REQUEST = 1024 * 1024
REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request",
           404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    """Return once 127.0.0.1:*port* accepts connections; raise if *proc* died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"receiver not listening on 127.0.0.1:{port} after {timeout:.0f}s")


class _Process:
    """A receiver subprocess, stopped (TERM, then KILL) on ``stop()`` or context exit."""

    kind = "?"
    proc: Optional[subprocess.Popen] = None
    port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def __enter__(self) -> "_Process":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> "_Process":  # pragma: no cover - overridden
        raise NotImplementedError


# -- nginx -------------------------------------------------------------------------

NGINX_CONF = """\
{modules}daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server_tokens off;
{maps}    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
{locations}        location / {{ return 204; }}
    }}
}}
"""


def find_nginx() -> Optional[str]:
    for path in (shutil.which("nginx"),) + NGINX_CANDIDATES:
        if path and os.access(path, os.X_OK):
            return path
    return None


def find_echo_module() -> Optional[str]:
    return next((path for path in ECHO_MODULE_CANDIDATES if os.path.exists(path)), None)


def _scripted(module: str) -> Dict[str, str]:
    """The config pieces that make nginx play the scripted paths (see the module docstring)."""
    delays = "".join(f"        ~^/delay/{ms}/ {ms / 1000};\n" for ms in NGINX_DELAYS_MS)
    maps = "    map $uri $delay_s {\n" + delays + "        default 0;\n    }\n"
    locations = ""
    for status in sorted(REASONS):
        locations += (f"        location ~ ^/delay/\\d+/status/{status}/ {{ echo_read_request_body; "
                      f"echo_sleep $delay_s; echo_status {status}; }}\n"
                      f"        location ~ ^/status/{status}/ {{ return {status}; }}\n")
    locations += "        location ~ ^/delay/ { echo_read_request_body; echo_sleep $delay_s; echo_status 204; }\n"
    return {"modules": f"load_module {module};\n", "maps": maps, "locations": locations}


class NginxReceiver(_Process):
    """nginx answering 204 to every request, on a free 127.0.0.1 port; with *echo_module*, the
    scripted paths too (delays of NGINX_DELAYS_MS only)."""

    def __init__(self, binary: str, workers: int = 1, echo_module: Optional[str] = None) -> None:
        self.binary = binary
        self.workers = workers
        self.echo_module = echo_module
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        version = (out.stderr or out.stdout).strip().rsplit("/", 1)[-1]
        plays = "scripted paths with echo_sleep" if echo_module else "return 204"
        self.kind = f"nginx {version} ({plays}; {workers} worker process{'es' if workers > 1 else ''})"

    def start(self) -> "NginxReceiver":
        self._tmp = tempfile.TemporaryDirectory(prefix="syncworkers-bench-nginx-")
        tmp = self._tmp.name
        os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user when started by root
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            pieces = _scripted(self.echo_module) if self.echo_module else {"modules": "", "maps": "", "locations": ""}
            f.write(NGINX_CONF.format(workers=self.workers, tmp=tmp, port=self.port, **pieces))
        self.proc = subprocess.Popen([self.binary, "-c", conf, "-p", tmp, "-e", f"{tmp}/error.log"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_listening(self.port, self.proc)
        except RuntimeError as exc:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"nginx did not start: {exc} {err.strip()[:300]}") from None
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: master waits for its workers
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        super().stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# -- the Python receiver ----------------------------------------------------------


class PythonReceiver(_Process):
    """``python scripts/receivers.py serve`` on a free port (see the module docstring)."""

    kind = "python selectors server (single thread; scripts/receivers.py)"

    def start(self) -> "PythonReceiver":
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", "--port", "0"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = _readline(self.proc, START_TIMEOUT)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"python receiver did not start: {line!r}")
        self.port = int(line.split()[1])
        wait_listening(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.stdin:
            try:
                self.proc.stdin.close()  # the server exits when its stdin closes
            except OSError:
                pass
        super().stop()


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    box: List[str] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True,
                         name="syncworkers-bench-readline")
    t.start()
    t.join(timeout)
    return box[0].strip() if box else ""


def fast_receiver(prefer: str = "auto") -> _Process:
    """nginx when *prefer* is auto/nginx and nginx is installed, else the Python receiver (started)."""
    if prefer in ("auto", "nginx"):
        binary = find_nginx()
        if binary:
            try:
                return NginxReceiver(binary).start()
            except (RuntimeError, OSError) as exc:
                if prefer == "nginx":
                    raise
                print(f"note: nginx failed to start ({exc}); using the Python receiver", file=sys.stderr)
        elif prefer == "nginx":
            raise RuntimeError("nginx is not installed")
    return PythonReceiver().start()


def latency_receiver(prefer: str = "auto") -> _Process:
    """nginx with the echo module when *prefer* allows it and both are installed, else the Python
    receiver (started): at hundreds in flight a single-threaded Python receiver is the bottleneck."""
    binary, module = find_nginx(), find_echo_module()
    if prefer in ("auto", "nginx") and binary and module:
        try:
            return NginxReceiver(binary, echo_module=module).start()
        except (RuntimeError, OSError) as exc:
            if prefer == "nginx":
                raise
            print(f"note: nginx with the echo module failed to start ({exc}); using the Python receiver",
                  file=sys.stderr)
    elif prefer == "nginx":
        raise RuntimeError("nginx or its echo module (libnginx-mod-http-echo) is not installed")
    return PythonReceiver().start()


# -- the server itself (runs in the child process) ---------------------------------


def _plan(path: bytes) -> Tuple[float, int]:
    """(delay seconds, status) scripted by the path."""
    delay, status = 0.0, 204
    parts = path.split(b"?", 1)[0].split(b"/")
    for i in range(len(parts) - 1):
        if parts[i] == b"delay" and parts[i + 1].isdigit():
            delay = int(parts[i + 1]) / 1000.0
        elif parts[i] == b"status" and parts[i + 1].isdigit():
            status = int(parts[i + 1])
    return delay, status


def _response(status: int, close: bool) -> bytes:
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nServer: bench\r\n"
    if status != 204:
        head += "Content-Length: 0\r\n"
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode()


class _Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "busy", "close_after")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.busy = False  # a delayed answer is pending: do not parse the next request yet
        self.close_after = False


def serve(port: int, stop_fd: Optional[int] = None) -> None:
    """Serve until *stop_fd* (stdin) reaches EOF or SIGTERM arrives."""
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, "listen")
    if stop_fd is not None:
        sel.register(stop_fd, selectors.EVENT_READ, "stop")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    timers: List[Tuple[float, int, _Conn, bytes]] = []
    seq = 0
    conns: Dict[int, _Conn] = {}
    print(f"READY {lsock.getsockname()[1]}", flush=True)

    def close(conn: _Conn) -> None:
        if conns.pop(conn.sock.fileno(), None) is not None:
            sel.unregister(conn.sock)
            conn.sock.close()

    def write(conn: _Conn, data: bytes) -> None:
        conn.outbuf += data
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            close(conn)
            return
        conn.outbuf = conn.outbuf[sent:]
        if conn.outbuf:
            sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        elif conn.close_after:
            close(conn)

    def handle(conn: _Conn) -> None:
        nonlocal seq
        while not conn.busy and conn.sock.fileno() in conns:
            end = conn.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.inbuf) > MAX_REQUEST:
                    close(conn)
                return
            head = conn.inbuf[:end]
            lines = head.split(b"\r\n")
            try:
                _method, path, _version = lines[0].split(b" ", 2)
            except ValueError:
                close(conn)
                return
            length, close_after = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close_after = True
                elif name == b"transfer-encoding":
                    close(conn)  # benchmark clients send Content-Length
                    return
            if len(conn.inbuf) < end + 4 + length:
                return
            conn.inbuf = conn.inbuf[end + 4 + length:]
            conn.close_after = close_after
            delay, status = _plan(path)
            data = _response(status, close_after)
            if delay > 0:
                conn.busy = True
                seq += 1
                heapq.heappush(timers, (time.monotonic() + delay, seq, conn, data))
            else:
                write(conn, data)

    while not stopping:
        timeout = max(0.0, timers[0][0] - time.monotonic()) if timers else 1.0
        for key, events in sel.select(min(timeout, 1.0)):
            if key.data == "listen":
                for _ in range(64):
                    try:
                        sock, _addr = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn = _Conn(sock)
                    conns[sock.fileno()] = conn
                    sel.register(sock, selectors.EVENT_READ, conn)
            elif key.data == "stop":
                if not os.read(stop_fd, 4096):
                    stopping.append(1)
            else:
                conn = key.data
                if events & selectors.EVENT_WRITE and conn.outbuf:
                    write(conn, b"")
                    if not conn.outbuf and conn.sock.fileno() in conns:
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)
                if events & selectors.EVENT_READ and conn.sock.fileno() in conns:
                    try:
                        data = conn.sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        close(conn)
                        continue
                    conn.inbuf += data
                    handle(conn)
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _due, _seq, conn, data = heapq.heappop(timers)
            if conn.sock.fileno() in conns:
                conn.busy = False
                write(conn, data)
                handle(conn)
    for conn in list(conns.values()):
        close(conn)
    lsock.close()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    srv = sub.add_parser("serve", help="run the Python receiver until stdin closes")
    srv.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, sys.stdin.fileno())


if __name__ == "__main__":
    main()
