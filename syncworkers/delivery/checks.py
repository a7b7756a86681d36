"""The input checks every way of sending shares: where a webhook goes and what it carries.

:class:`InputChecks` turns what a caller gives (an endpoint, data, headers, an id)
into a checked :class:`Webhook` before anything is sent or stored, so that
``enqueue()`` refuses exactly what ``deliver()`` and ``broadcast()`` refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from ..config.defaults import DEFAULT_MAX_PAYLOAD_BYTES
from .endpoints import EndpointResolver
from .request import check_delivery_id, check_headers, encode_body


@dataclass(frozen=True)
class Webhook:
    """One webhook as checked, before any attempt."""

    endpoint: str  #: as the caller gave it
    url: str  #: where it goes
    body: bytes  #: the JSON body
    headers: Dict[str, str]  #: the caller's own headers (the Standard Webhooks ones are added per attempt)
    id: str  #: its ``webhook-id``


class InputChecks:
    """Checks a caller's input: ConfigError for an unknown endpoint or invalid URL, TypeError or
    ValueError for data JSON cannot hold (or over *max_payload_bytes*) and bad headers or ids."""

    def __init__(self, endpoints: EndpointResolver,
                 max_payload_bytes: Optional[int] = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.endpoints = endpoints
        self.max_payload_bytes = max_payload_bytes

    def one(self, endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None,
            delivery_id: Optional[str] = None) -> Webhook:
        """One webhook to *endpoint*; a new id when *delivery_id* is None."""
        url = self.endpoints.url_for(endpoint)
        body = encode_body(data, self.max_payload_bytes)
        extra = check_headers(headers)
        return Webhook(endpoint, url, body, extra, check_delivery_id(delivery_id))

    def many(self, endpoints: Iterable[str], data: Any,
             headers: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, str], bytes, Dict[str, str]]:
        """``({endpoint: url}, body, headers)`` of one body for several endpoints (each listed once)."""
        if isinstance(endpoints, (str, bytes)):
            raise TypeError("endpoints must be a list of endpoints, not a single string")
        targets = {endpoint: self.endpoints.url_for(endpoint) for endpoint in dict.fromkeys(endpoints)}
        return targets, encode_body(data, self.max_payload_bytes), check_headers(headers)


__all__ = ["InputChecks", "Webhook"]
