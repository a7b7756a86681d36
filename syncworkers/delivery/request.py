"""A webhook delivery's request: its body, headers, id and signature, and its result.

One home for what a webhook request looks like, used alike by direct sends
(:meth:`WebhookSenderWorker.deliver`), broadcasts and the outbox: the input checks
(so that ``enqueue()`` never stores what ``deliver()`` would refuse), the JSON body,
and the headers every attempt carries (``Content-Type``, the caller's own, then
``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, MutableMapping, Optional

from ..config.defaults import DEFAULT_MAX_PAYLOAD_BYTES
from ..exceptions import safe_url
from ..message import new_id
from ..http.headers import check_header, is_transport_header
from ..http.outcome import Outcome
from ..signing import Signer, webhook_headers

#: Longest ``webhook-id`` accepted (Standard Webhooks ids are short; this bounds storage).
MAX_DELIVERY_ID_LENGTH = 256
#: A delivery id: printable ASCII, no spaces.
_ID = re.compile(r"^[\x21-\x7e]+$")


def encode_body(data: Any, max_bytes: Optional[int] = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """*data* as compact UTF-8 JSON; TypeError/ValueError saying why when JSON cannot hold it.

    ValueError too when the body is over *max_bytes* (``WebhookConfig.max_payload_bytes``;
    None: no cap), so that deliver, broadcast and enqueue alike refuse it before
    anything is sent or stored.
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"webhook data is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValueError("webhook data is nested too deeply to encode as JSON") from None
    body = text.encode("utf-8")
    if max_bytes is not None and len(body) > max_bytes:
        raise ValueError(f"webhook data is {len(body)} bytes as JSON, over the cap of {max_bytes} "
                         "(WebhookConfig.max_payload_bytes, WEBHOOK_MAX_PAYLOAD_BYTES)")
    return body


def check_headers(headers: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """The caller's extra headers as a dict, or TypeError/ValueError naming the bad one (one the
    transport sets among them: ``Content-Length``, ``Transfer-Encoding``, ``Host``...)."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of strings, not {type(headers).__name__}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"header {key!r}: names and values must be strings, "
                            f"got {type(value).__name__}")
        check_header(key, value)
    return dict(headers)


def check_delivery_id(delivery_id: Optional[str]) -> str:
    """*delivery_id*, or a new id when None; ValueError for one no header can carry."""
    if delivery_id is None:
        return new_id()
    if (not isinstance(delivery_id, str) or not _ID.match(delivery_id)
            or len(delivery_id) > MAX_DELIVERY_ID_LENGTH):
        shown = delivery_id[:40] + "..." if isinstance(delivery_id, str) and len(delivery_id) > 40 else delivery_id
        raise ValueError(f"delivery_id must be 1-{MAX_DELIVERY_ID_LENGTH} printable ASCII characters "
                         f"without spaces, got {shown!r}")
    return delivery_id


def delivery_headers(delivery_id: str, body: bytes, signer: Optional[Signer],
                     extra: Optional[Mapping[str, str]] = None,
                     timestamp: Optional[int] = None) -> MutableMapping[str, str]:
    """The headers of one attempt; the Standard Webhooks ones win over the caller's.

    The transport's own headers (``Content-Length``, ``Host``...) are left out of *extra*:
    :func:`check_headers` refuses them, but an outbox written before that rule may hold some.
    """
    headers: Dict[str, str] = {"Content-Type": "application/json"}
    for layer in (extra or {}, webhook_headers(delivery_id, body, signer, timestamp)):
        for name, value in layer.items():
            if is_transport_header(name):
                continue
            # Case-insensitive: a later layer's header replaces an earlier one however it is spelled.
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
    return headers


def safe_endpoint(endpoint: str) -> str:
    """*endpoint* fit for logs: a URL's credentials, query string and secret segments masked."""
    return safe_url(endpoint) or ""


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one webhook delivery."""

    ok: bool  #: a 2xx answer, after retries
    endpoint: str  #: as the caller gave it, minus userinfo and query string
    url: str  #: where it went, without userinfo or query string (safe to log)
    status_code: Optional[int]  #: the final status; None when no answer came
    attempts: int  #: requests made (0: nothing sent, e.g. open circuit or cancelled)
    duration: float  #: seconds, retry waits included
    error: Optional[str]  #: why it failed; None when ok
    delivery_id: str  #: the ``webhook-id`` every attempt carried

    @classmethod
    def failed(cls, endpoint: str, url: str, error: str, delivery_id: Optional[str] = None) -> "DeliveryResult":
        """A delivery that sent nothing (cancelled, worker stopped, refused before sending)."""
        return cls(ok=False, endpoint=safe_endpoint(endpoint), url=safe_url(url) or "", status_code=None,
                   attempts=0, duration=0.0, error=error, delivery_id=delivery_id or new_id())

    @classmethod
    def from_outcome(cls, endpoint: str, url: str, outcome: Outcome, attempts: int, duration: float,
                     delivery_id: str) -> "DeliveryResult":
        return cls(ok=outcome.ok, endpoint=safe_endpoint(endpoint), url=safe_url(url) or "",
                   status_code=outcome.status_code, attempts=attempts, duration=duration,
                   error=None if outcome.ok else outcome.error, delivery_id=delivery_id)


__all__ = [
    "DeliveryResult",
    "MAX_DELIVERY_ID_LENGTH",
    "check_delivery_id",
    "check_headers",
    "delivery_headers",
    "encode_body",
    "safe_endpoint",
]
