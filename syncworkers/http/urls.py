"""URLs: the one rule for checking an http(s) URL and for joining a path to a base URL.

Every place that turns ``/path``, ``path``, ``//host/path`` or an absolute URL
into the URL a request goes to — the HTTP client, pollers, webhook endpoints —
calls :func:`join_url`, so the same inputs give the same URL everywhere. Error
texts never quote a password or a query string.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

from ..exceptions import ConfigError, safe_url

SCHEMES = ("http", "https")
#: Characters never allowed in a URL we send (header injection, truncation).
_FORBIDDEN = frozenset("\r\n\t\x00 ")


def url_problem(url: str, *, base: bool = False) -> Optional[str]:
    """Why *url* is not an absolute http(s) URL we can send to (None when it is).

    A *base* URL must also have no query string or fragment: a path joined to it
    would land inside them.
    """
    if any(c in _FORBIDDEN for c in url):
        return "contains a space, a line break or a NUL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return "has an invalid port or host"
    if parts.scheme not in SCHEMES or not parts.hostname:
        return "needs http:// or https:// and a host"
    if base and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        return "is a base URL and must not have a query string or fragment"
    return None


def check_url(url: str, *, base: bool = False, what: str = "URL") -> str:
    """*url* stripped, or ConfigError saying why it cannot be used."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {type(url).__name__}")
    url = url.strip()
    problem = url_problem(url, base=base)
    if problem is not None:
        raise ConfigError(f"invalid {what} {safe_url(url)!r}: {problem}")
    return url


def is_absolute(target: str) -> bool:
    """True for ``scheme://...`` targets (not for ``//host/path``)."""
    return "://" in target.split("?", 1)[0].split("#", 1)[0] and not target.startswith("/")


def join_url(base: Optional[str], target: str, *, what: str = "URL") -> str:
    """The URL a request for *target* goes to.

    * ``http(s)://host/...``: itself (checked);
    * ``//host/path``: *base*'s scheme with that host and path;
    * ``/path`` or ``path``: appended to *base*'s path (``http://h/api`` + ``/hook`` is
      ``http://h/api/hook``), keeping *target*'s own query string.
    """
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {target!r}")
    target = target.strip()
    if is_absolute(target):
        return check_url(target, what=what)
    if not base:
        raise ConfigError(f"{what} {_shown(target)!r} is a path but there is no base_url "
                          "(argument, config object or HTTP_BASE_URL)")
    base = check_url(base, base=True, what="base_url")
    if target.startswith("//"):
        return check_url(f"{urlsplit(base).scheme}:{target}", what=what)
    joined = base.rstrip("/") + "/" + target.lstrip("/")
    problem = url_problem(joined)
    if problem is not None:
        raise ConfigError(f"invalid {what} {_shown(target)!r}: {problem}")
    return joined


def _shown(target: str) -> str:
    """A relative target fit for an error message: its query string (tokens) masked."""
    if target.startswith("//"):
        return safe_url("http:" + target) or ""
    return safe_url(target) or ""


__all__ = ["SCHEMES", "check_url", "is_absolute", "join_url", "url_problem"]
