"""What a valid HTTP header is: the one rule for header names and values.

The config (``secret_headers``, ``api_key_header``, ``default_headers``), webhook
deliveries (so that ``enqueue()`` never stores what ``deliver()`` would refuse), the
poller's headers and the HTTP client's per-call headers all ask :func:`header_problem`.
A name is an RFC 9110 token; a value has no line break or NUL (header injection), no
leading whitespace, and is Latin-1 text (or bytes). A caller may not set the headers
that frame the message, belong to one connection or name the host
(:data:`TRANSPORT_HEADERS`, ``Proxy-*``): the transport writes those, and one from a
caller beside the transport's gives a request two framings (``Content-Length`` and
``Transfer-Encoding``: request smuggling through a proxy) or another target. Pure.
"""

from __future__ import annotations

import re
from typing import Any, Optional

#: An HTTP header name: an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a value must not hold: a line break or a NUL (header injection).
_FORBIDDEN_IN_VALUE = re.compile("[\r\n\x00]")
#: Headers only the transport sets (lowercase): the message's framing (RFC 9112 §6), the
#: connection's own (hop-by-hop, RFC 9110 §7.6.1) and the target host. ``Proxy-*`` too.
TRANSPORT_HEADERS = frozenset((
    "content-length", "transfer-encoding", "te", "trailer",
    "connection", "keep-alive", "upgrade",
    "host",
))


def name_problem(name: Any) -> Optional[str]:
    """Why *name* is not an HTTP header name (None when it is)."""
    if not isinstance(name, str):
        return f"header names must be strings, got {type(name).__name__}"
    if not _TOKEN.fullmatch(name):
        return f"header name {name!r} is not a valid HTTP header name"
    return None


def is_transport_header(name: str) -> bool:
    """True for a header only the transport may set (:data:`TRANSPORT_HEADERS`, ``Proxy-*``)."""
    lower = name.lower()
    return lower in TRANSPORT_HEADERS or lower.startswith("proxy-")


def value_problem(value: Any) -> Optional[str]:
    """Why *value* cannot be a header's value (None when it can); never quotes it (it may be a secret)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")  # every byte is a Latin-1 character
    elif not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if _FORBIDDEN_IN_VALUE.search(value):
        return "contains a line break or a NUL"
    if value[:1].isspace():
        return "starts with whitespace"
    if not value.isascii():  # (ASCII, the common case, is Latin-1 without encoding it)
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return "must be Latin-1 text (encode other text first)"
    return None


def header_problem(name: Any, value: Any, *, caller: bool = True) -> Optional[str]:
    """Why header *name*: *value* cannot be sent (None when it can).

    *caller* False: a header of the toolkit's own (requests' ``Connection: keep-alive``),
    which may be one of the transport's.
    """
    problem = name_problem(name)
    if problem is not None:
        return problem
    problem = value_problem(value)
    if problem is not None:
        return f"header {name!r}: the value {problem}"
    if caller and is_transport_header(name):
        return (f"header {name!r} is set by the HTTP transport (it frames the request, belongs to "
                "the connection or names the host): leave it out")
    return None


def check_header(name: Any, value: Any) -> None:
    """Raise TypeError (a name or value that is not text) or ValueError saying why the header cannot be sent."""
    problem = header_problem(name, value)
    if problem is not None:
        wrong_type = not isinstance(name, str) or not isinstance(value, (str, bytes))
        raise (TypeError if wrong_type else ValueError)(problem)


__all__ = ["TRANSPORT_HEADERS", "check_header", "header_problem", "is_transport_header", "name_problem",
           "value_problem"]
