"""Raw TCP receivers on the loopback: one answers whatever bytes a test scripts, however slowly; one keeps the exact bytes of every request."""

import socket
import threading


class _LoopbackListener:
    """A listening socket on the loopback with one accepting thread and a thread per connection;
    a subclass's ``_serve(conn)`` speaks on each. Stopped (threads joined, socket closed) on exit."""

    #: Seconds each accept() and the subclass's reads wait before they look at ``stop`` again.
    poll = 0.1
    name = "loopback"

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.stop = threading.Event()
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(self.poll)
        self.port = self.sock.getsockname()[1]
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, name=f"{self.name}-accept", daemon=True)

    @property
    def base_url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path="/"):
        return self.base_url + path

    def __enter__(self):
        self.acceptor.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)
        self.sock.close()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):  # pragma: no cover - overridden
        raise NotImplementedError


class HostileReceiver(_LoopbackListener):
    """A TCP server that reads a request head, then feeds the client with *behaviour*."""

    name = "hostile"

    def __init__(self, behaviour):
        super().__init__()
        self.behaviour = behaviour
        self.requests = threading.Event()  # a request head arrived
        self.count = 0
        self.closed_by_client = threading.Event()

    def _serve(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.count += 1
            self.requests.set()
            try:
                for piece in self.behaviour():
                    if self.stop.wait(piece[1]):
                        return
                    conn.sendall(piece[0])
            except OSError:  # the client gave up and closed: what the deadline is for
                self.closed_by_client.set()


class RecordingReceiver(_LoopbackListener):
    """An HTTP/1.1 receiver on the loopback (``127.0.0.1``, or ``::1`` with *host*) that keeps the exact
    bytes of every request and answers each ``200`` with an empty body, on keep-alive connections.

    A body is read by its framing as a proxy would read it: chunked when ``Transfer-Encoding``
    says so (whatever ``Content-Length`` says too), else ``Content-Length`` bytes. What a request
    with a broken framing leaves unread is kept too: ``requests`` holds each request's bytes as read.
    """

    poll = 0.05
    name = "recording"

    def __init__(self, host="127.0.0.1"):
        super().__init__(host)
        self.requests = []  # raw bytes of each request: head and body
        self.received = threading.Event()  # a request arrived

    def heads(self):
        """Each request's head lines (request line first), as text."""
        return [raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n") for raw in self.requests]

    def _serve(self, conn):
        with conn:
            conn.settimeout(self.poll)
            buffer = b""
            while not self.stop.is_set():
                try:
                    buffer, done = self._one_request(conn, buffer)
                except OSError:  # the client closed or reset the connection
                    return
                if not done:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def _read(self, conn, buffer, enough):
        """*buffer* and more bytes from *conn* until ``enough(buffer)``; None when the peer closed or we stop."""
        while not enough(buffer):
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                if self.stop.is_set():
                    return None
                continue
            if not chunk:
                return None
            buffer += chunk
        return buffer

    def _one_request(self, conn, buffer):
        """Read one request off *conn* (after *buffer*): (bytes left over, whether one was read)."""
        buffer = self._read(conn, buffer, lambda b: b"\r\n\r\n" in b)
        if buffer is None:
            return b"", False
        head, _, rest = buffer.partition(b"\r\n\r\n")
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.strip().lower(), value.strip())
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            whole = self._read(conn, rest, lambda b: b"0\r\n\r\n" in b)
            if whole is None:  # no last chunk ever came: keep what did
                self._keep(head + b"\r\n\r\n" + rest)
                return b"", False
            end = whole.index(b"0\r\n\r\n") + 5
        else:
            length = int(fields.get(b"content-length", b"0") or 0)
            whole = self._read(conn, rest, lambda b: len(b) >= length)
            if whole is None:
                self._keep(head + b"\r\n\r\n" + rest)
                return b"", False
            end = length
        self._keep(head + b"\r\n\r\n" + whole[:end])
        return whole[end:], True

    def _keep(self, raw):
        self.requests.append(raw)
        self.received.set()
