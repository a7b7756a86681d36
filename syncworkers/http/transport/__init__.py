"""Transports: the HTTP library under HTTPClient (requests by default, libcurl optional)."""

from __future__ import annotations

from typing import Any

import requests

from ...config.settings import HTTPClientConfig
from ...exceptions import ConfigError
from .base import Timeout, Timeouts, Transport, as_timeouts


def make_transport(config: HTTPClientConfig, session: requests.Session, pool_size: int,
                   clock: Any) -> Transport:
    """The transport *config* names; *session* holds the client's headers and cookies."""
    if config.transport == "curl":
        try:
            from .curl import CurlTransport
        except ImportError as exc:
            raise ConfigError("transport 'curl' needs pycurl: pip install 'syncworkers[curl]'",
                              {"transport": str(exc)}) from None
        return CurlTransport(config, session.cookies, pool_size, clock)
    from .requests_transport import RequestsTransport

    return RequestsTransport(config, session, pool_size, clock)


__all__ = ["Timeout", "Timeouts", "Transport", "as_timeouts", "make_transport"]
