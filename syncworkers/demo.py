"""``syncworkers demo``: the whole toolkit end to end, on 127.0.0.1, with nothing to set up.

An embedded "partner API" publishes events; a PollerWorker polls it at a fixed
rate and relays each event through a WebhookSenderWorker's SQLite outbox as a
signed webhook to an embedded receiver, which verifies every signature and
fails some first attempts so that retries show.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Set, Tuple

from .config.settings import WebhookConfig
from .exceptions import SignatureError
from .message import Message
from .signing import verify
from .workers.poller import PollerWorker
from .workers.webhook import WebhookSenderWorker

#: Every Nth delivery's first attempt is answered 503, to show the outbox retrying.
FAIL_EVERY = 4


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Embedded:
    """A small threaded HTTP/1.1 server on 127.0.0.1 answering with ``handle(method, path, headers, body)``."""

    def __init__(self, handle: Callable[[str, str, Dict[str, str], bytes], Tuple[int, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = handle(self.command, self.path, dict(self.headers.items()), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="syncworkers-demo-server", daemon=True)

    def __enter__(self) -> "_Embedded":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _PartnerAPI:
    """Publishes two new events per request: GET /events -> {"events": [...]}."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_id = 1

    def __call__(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Any]:
        with self.lock:
            events = [{"id": n, "type": "order_created" if n % 2 else "order_paid", "amount": n * 10}
                      for n in range(self.next_id, self.next_id + 2)]
            self.next_id += 2
        return 200, {"events": events}


class _Receiver:
    """Verifies each webhook's signature; answers 503 to the first attempt of every FAIL_EVERY-th."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.lock = threading.Lock()
        self.received: Set[str] = set()
        self.attempts = 0
        self.refused: Set[str] = set()
        self.bad_signatures = 0

    def __call__(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Any]:
        try:
            verify(body, headers, self.secret)
        except SignatureError:
            with self.lock:
                self.bad_signatures += 1
            return 400, {"error": "bad signature"}
        delivery_id = headers.get("webhook-id") or headers.get("Webhook-Id") or ""
        with self.lock:
            self.attempts += 1
            if self.attempts % FAIL_EVERY == 0 and delivery_id not in self.refused:
                self.refused.add(delivery_id)
                return 503, {"error": "try again"}
            self.received.add(delivery_id)
        return 200, {"ok": True}


def run_demo(seconds: float = 3.0, outbox_path: Optional[str] = None,
             echo: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the demo for *seconds*, deliver everything, print and return a summary."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    if outbox_path is None:
        outbox_path = os.path.join(tempfile.mkdtemp(prefix="syncworkers-demo-"), "outbox.sqlite3")
    receiver = _Receiver(secret)
    with _Embedded(_PartnerAPI()) as api, _Embedded(receiver) as hooks:
        sender = WebhookSenderWorker(
            base_url=hooks.url, signing_secret=secret,
            webhook_config=WebhookConfig(outbox_path=outbox_path, retry_schedule=(0.2, 0.5, 1.0)),
        )
        enqueued = []

        class EventRelay(PollerWorker):
            def process_message(self, message: Message) -> Any:
                enqueued.append(sender.enqueue("/hooks/orders", message.body))
                return message.body["id"]

        poller = EventRelay(url=f"{api.url}/events", interval=0.5,
                            data_extractor=lambda body: body["events"])
        echo(f"partner API   {api.url}/events  (polled every 0.5 s)")
        echo(f"receiver      {hooks.url}/hooks/orders  (verifies Standard Webhooks signatures)")
        echo(f"outbox        {outbox_path}")
        started = time.monotonic()
        sender.start()
        poller.start()
        try:
            threading.Event().wait(seconds)
            poller.stop(timeout=10)  # no more events; then everything enqueued is delivered
            delivered_all = sender.flush(timeout=30)
        finally:
            poller.close()
            sender.stop(timeout=10)
            counts = sender.outbox.counts()
            sender.close()
        summary = {
            "seconds": round(time.monotonic() - started, 2),
            "polls": int(poller.health()["metrics"].get("polls", 0)),
            "events_enqueued": len(enqueued),
            "delivered": counts.get("delivered", 0),
            "dead": counts.get("dead", 0),
            "pending": counts.get("pending", 0),
            "received_unique": len(receiver.received),
            "first_attempts_refused": len(receiver.refused),
            "bad_signatures": receiver.bad_signatures,
            "all_delivered": delivered_all and set(enqueued) <= receiver.received,
            "outbox": outbox_path,
        }
    for key, value in summary.items():
        echo(f"{key:24} {value}")
    return summary


__all__ = ["run_demo"]
