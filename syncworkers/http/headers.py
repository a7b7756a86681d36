"""What a valid HTTP header is: the one rule for header names and values.

The config (``secret_headers``, ``api_key_header``), webhook deliveries (so that
``enqueue()`` never stores what ``deliver()`` would refuse) and the HTTP client's
per-call headers all ask :func:`header_problem`. A name is an RFC 9110 token; a value
has no line break or NUL (header injection), no leading whitespace, and is Latin-1
text (or bytes). Pure.
"""

from __future__ import annotations

import re
from typing import Any, Optional

#: An HTTP header name: an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = frozenset("\r\n\x00")


def name_problem(name: Any) -> Optional[str]:
    """Why *name* is not an HTTP header name (None when it is)."""
    if not isinstance(name, str):
        return f"header names must be strings, got {type(name).__name__}"
    if not _TOKEN.fullmatch(name):
        return f"header name {name!r} is not a valid HTTP header name"
    return None


def header_problem(name: Any, value: Any) -> Optional[str]:
    """Why header *name*: *value* cannot be sent (None when it can)."""
    problem = name_problem(name)
    if problem is not None:
        return problem
    if isinstance(value, bytes):
        try:
            value = value.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return f"header {name!r}: the value cannot be decoded"
    elif not isinstance(value, str):
        return f"header {name!r}: values must be strings, got {type(value).__name__}"
    if any(c in _FORBIDDEN_IN_VALUE for c in value):
        return f"header {name!r} contains a line break or a NUL"
    if value[:1].isspace():
        return f"header {name!r}: the value starts with whitespace"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"header {name!r}: values must be Latin-1 text (encode other text first)"
    return None


def check_header(name: Any, value: Any) -> None:
    """Raise TypeError (a name or value that is not text) or ValueError saying why the header cannot be sent."""
    problem = header_problem(name, value)
    if problem is not None:
        wrong_type = not isinstance(name, str) or not isinstance(value, (str, bytes))
        raise (TypeError if wrong_type else ValueError)(problem)


__all__ = ["check_header", "header_problem", "name_problem"]
