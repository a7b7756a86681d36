"""A raw TCP receiver on 127.0.0.1 that answers whatever bytes a test scripts, however slowly."""

import socket
import threading


class HostileReceiver:
    """A TCP server that reads a request head, then feeds the client with *behaviour*."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.requests = threading.Event()  # a request head arrived
        self.count = 0
        self.closed_by_client = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

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
            t = threading.Thread(target=self._serve, args=(conn,), name="hostile-conn", daemon=True)
            self.threads.append(t)
            t.start()

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
