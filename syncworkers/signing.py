"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

A signature is ``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")).
Several secrets sign at once (space-separated signatures) so that receivers can
rotate keys. Pure: no I/O; time is an argument where it matters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from typing import Any, List, Mapping, Optional, Sequence, Union, cast

from .exceptions import ConfigError, SignatureError

__all__ = ["check_tolerance", "load_secret", "load_secrets", "split_secrets", "sign", "Signer", "webhook_headers",
           "verify"]

SECRET_PREFIX = "whsec_"
#: Shortest signing key accepted, in bytes once decoded (Standard Webhooks: 24 to 64).
MIN_SECRET_BYTES = 24
DEFAULT_TOLERANCE = 300
"""Seconds a receiver accepts between the webhook's timestamp and its own clock, either way."""

Secret = Union[str, bytes]
Secrets = Union[Secret, Sequence[Secret]]


def load_secret(secret: Secret) -> bytes:
    """Return the HMAC key of *secret*: ``whsec_`` + base64, bare base64, or raw bytes as-is.

    Raises ConfigError (never quoting the secret) when it is empty, not base64, or
    shorter than :data:`MIN_SECRET_BYTES` once decoded.
    """
    if isinstance(secret, (bytes, bytearray)):
        key = bytes(secret)
    elif isinstance(secret, str):
        text = secret.strip()
        text = text[len(SECRET_PREFIX):] if text.startswith(SECRET_PREFIX) else text
        text = text.rstrip("=")
        try:  # padding is often dropped; strict decoding rejects anything else
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            msg = f"signing secret is not valid base64 (expected '{SECRET_PREFIX}<base64>')"
            raise ConfigError(msg) from None
    else:
        raise ConfigError(f"signing secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise ConfigError("signing secret is empty")
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"signing secret is {len(key)} bytes long; at least {MIN_SECRET_BYTES} are needed "
                          f"(Standard Webhooks: 24 to 64, e.g. '{SECRET_PREFIX}' + base64 of 32 random bytes)")
    return key


def split_secrets(secrets: Secrets) -> List[Secret]:
    """The secrets in *secrets*: a list as given, a string split at spaces and commas (rotation from the env)."""
    if isinstance(secrets, str):
        parts: List[Secret] = list(secrets.replace(",", " ").split())
        return parts or [secrets]
    if isinstance(secrets, (list, tuple)):
        return list(secrets)
    # One bytes secret, or something else that load_secret will name in its error.
    return [cast(Secret, secrets)]


def load_secrets(secrets: Secrets) -> List[bytes]:
    """The HMAC keys of *secrets* (see :func:`split_secrets`); ConfigError if there are none or one is bad."""
    items = split_secrets(secrets)
    if not items:
        raise ConfigError("no signing secret given")
    return [load_secret(s) for s in items]


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _as_bytes(body: bytes | str) -> bytes:
    """*body* as bytes: str is UTF-8 encoded, bytes-like taken as is; TypeError for anything else.

    Never ``bytes(5)``, which would quietly be five NUL bytes.
    """
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be bytes or str (the raw request body), not {type(body).__name__}")


def _sign_keys(keys: List[bytes], msg_id: str, timestamp: int, body: bytes | str) -> str:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"timestamp must be an int (seconds since epoch), not {type(timestamp).__name__}")
    data = _as_bytes(body)
    return " ".join("v1," + base64.b64encode(_digest(k, msg_id, timestamp, data)).decode() for k in keys)


def sign(msg_id: str, timestamp: int, body: bytes | str, secrets: Secrets) -> str:
    """Return the ``webhook-signature`` value: one ``v1,<sig>`` per secret, in the order given."""
    return _sign_keys(load_secrets(secrets), msg_id, timestamp, body)


class Signer:
    """Signs outgoing webhooks with one or several secrets (validated at construction).

    Whoever prints on the signer's behalf masks its secrets: a worker tells its
    :class:`~syncworkers.observability.redaction.Redactor` (``redactor.add_secret`` for
    each of :func:`split_secrets`).
    """

    def __init__(self, secrets: Secrets):
        self._keys = load_secrets(secrets)

    def headers(self, msg_id: str, body: bytes, timestamp: Optional[int] = None) -> dict[str, str]:
        """Return the ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers."""
        ts = int(time.time()) if timestamp is None else timestamp
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
                "webhook-signature": _sign_keys(self._keys, msg_id, ts, body)}

    def __repr__(self) -> str:
        n = len(self._keys)
        return f"Signer({n} secret{'' if n == 1 else 's'})"


def webhook_headers(msg_id: str, body: bytes, signer: Optional[Signer] = None,
                    timestamp: Optional[int] = None) -> dict[str, str]:
    """Return the Standard Webhooks headers; ``webhook-signature`` only when there is a *signer*."""
    if signer is not None:
        return signer.headers(msg_id, body, timestamp)
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts)}


def _header(headers: Mapping[str, str], name: str) -> str:
    # Svix, where the standard comes from, sends the same headers as svix-*.
    value = headers.get(f"webhook-{name}") or headers.get(f"svix-{name}")
    if not value:
        raise SignatureError(f"missing webhook-{name} header")
    if not isinstance(value, str):
        raise SignatureError(f"webhook-{name} header is not text ({type(value).__name__})")
    return value


def _seconds(name: str, value: Any, negative: bool = False) -> float:
    """*value* as a finite number of seconds (>= 0 unless *negative*); TypeError or ConfigError naming *name*.

    A NaN would pass every comparison of the time window: any timestamp, however old, would do.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or (value < 0 and not negative):
        raise ConfigError(f"{name} must be a finite number of seconds{'' if negative else ' >= 0'}, got {value!r}")
    return float(value)


def check_tolerance(tolerance: Any) -> float:
    """*tolerance* as seconds, or TypeError / ConfigError (a ValueError) for one :func:`verify` refuses:
    what a receiver decorator checks when it is applied, not at its first request."""
    return _seconds("tolerance", tolerance)


def verify(body: bytes | str, headers: Mapping[str, str], secret: Secrets,
           tolerance: float = DEFAULT_TOLERANCE, now: Optional[float] = None) -> bool:
    """Check a received webhook; return True or raise :class:`SignatureError` saying why.

    *headers* is any mapping (Django's or Flask's ``request.headers``, a dict in any case).
    Passes when any ``v1`` signature matches any of the secrets (rotation). *tolerance* is
    seconds >= 0 (a negative one would refuse every signature) and *now* epoch seconds:
    anything else is a TypeError or ConfigError (a ValueError), never a verdict.
    """
    if not isinstance(headers, Mapping) and not callable(getattr(headers, "items", None)):
        raise TypeError(f"headers must be a mapping of header names to values (request.headers), "
                        f"not {type(headers).__name__}")
    data = _as_bytes(body)
    keys = load_secrets(secret)
    window = check_tolerance(tolerance)
    at = time.time() if now is None else _seconds("now", now, negative=True)
    lowered = {str(k).lower(): v for k, v in headers.items()}
    msg_id, raw_ts, signatures = (_header(lowered, n) for n in ("id", "timestamp", "signature"))
    if not (raw_ts.isascii() and raw_ts.isdigit()):
        raise SignatureError("webhook-timestamp is not an integer")
    timestamp = int(raw_ts)
    if timestamp < at - window:
        raise SignatureError(f"webhook-timestamp is too old (more than {window:g}s in the past)")
    if timestamp > at + window:
        raise SignatureError(f"webhook-timestamp is too new (more than {window:g}s in the future)")
    expected = [_digest(k, msg_id, timestamp, data) for k in keys]
    for entry in signatures.split():
        version, _, sig = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            return True
    raise SignatureError("no webhook-signature matches (wrong secret or altered id, timestamp or body)")
