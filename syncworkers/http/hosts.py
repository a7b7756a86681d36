"""What a URL's host is: the one rule behind every per-host key and every printed host.

The circuit breakers (``scheme://host:port``), the host limits and metric labels
(``host:port``), the outbox's endpoints (``host[:port]/path``), redirects and
pagination (the origin) and printed URLs all take the host from here: lowercase,
an IPv6 literal in its brackets (``[::1]``), the scheme's port filled in where a
key needs one. Pure, and imports nothing of the package: the redaction rule uses it.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Optional
from urllib.parse import SplitResult, urlsplit

#: The port of each scheme when a URL names none.
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_of(parts: SplitResult) -> str:
    """The host of split URL *parts*: lowercase, an IPv6 literal bracketed; ``""`` when there is none."""
    host = parts.hostname or ""
    return f"[{host}]" if ":" in host else host


def netloc(parts: SplitResult) -> str:
    """``host[:port]`` of split URL *parts* as given (no userinfo); ValueError for a malformed port."""
    host = host_of(parts)
    port = parts.port
    return f"{host}:{port}" if port else host


class Origin(NamedTuple):
    """Scheme, host and port of a URL: what two URLs must share to be the same server."""

    scheme: str  #: lowercase
    host: str  #: lowercase; an IPv6 literal in brackets; "" when the URL has none
    port: int  #: as given, else the scheme's default (0 for a scheme without one)

    @property
    def authority(self) -> str:
        """``host:port``: the key of the host limits and of metric labels."""
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> str:
        """``scheme://host:port``: the key of the circuit breakers (safe to log)."""
        return f"{self.scheme}://{self.authority}"


def origin(url: str, parts: Optional[SplitResult] = None) -> Origin:
    """The :class:`Origin` of *url* (or of its split *parts*); ValueError for a malformed port."""
    parts = urlsplit(url.strip()) if parts is None else parts
    scheme = parts.scheme.lower()
    port = parts.port
    return Origin(scheme, host_of(parts), DEFAULT_PORTS.get(scheme, 0) if port is None else port)


def bracket_ipv6(text: str, url: str) -> str:
    """*text* (a transport's own message about *url*) with the URL's IPv6 address in brackets.

    libcurl says ``Failed to connect to ::1:8080`` (or ``::1 port 8080``): printed bare,
    ``::1:8080`` reads as another IPv6 address.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return text
    if ":" not in host:
        return text
    port = DEFAULT_PORTS.get(parts.scheme.lower(), 0) if port is None else port
    try:
        spellings = {host, str(ipaddress.IPv6Address(host))}
    except ValueError:
        spellings = {host}
    for address in spellings:
        text = text.replace(f"{address}:{port}", f"[{address}]:{port}")
        text = text.replace(f"{address} port {port}", f"[{address}] port {port}")
    return text


__all__ = ["DEFAULT_PORTS", "Origin", "bracket_ipv6", "host_of", "netloc", "origin"]
