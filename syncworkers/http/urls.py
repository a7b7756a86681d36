"""URLs: the one rule for checking an http(s) URL and for joining a path to a base URL.

Every place that turns ``/path``, ``path``, ``//host/path`` or an absolute URL
into the URL a request goes to — the HTTP client, pollers, webhook endpoints —
calls :func:`join_url`, so the same inputs give the same URL everywhere. Error
texts never quote a password or a query string.

A URL is checked where it enters and comes out with its host as the wire will
carry it (:func:`wire_host`): percent-escapes decoded, a Unicode name in its ASCII
form (IDNA, UTS-46, as requests encodes it), an IPv6 literal in its brackets. So
``http://127。0。0。1/`` is ``http://127.0.0.1/`` for the SSRF guard, the circuit
breakers and the outbox alike, and a host no transport can send to is a ConfigError
at once instead of a transport's own exception at the first request.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional, Tuple
from urllib.parse import SplitResult, unquote, urlsplit

import idna

from ..exceptions import ConfigError, safe_url

SCHEMES = ("http", "https")
#: Characters never allowed in a URL we send (header injection, truncation).
_FORBIDDEN = frozenset("\r\n\t\x00 ")
#: A host name once in ASCII: labels of letters, digits, ``-`` and ``_`` (not DNS-strict: ``_``
#: names exist), dot separated, at most one trailing dot (the DNS root).
_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
#: What may follow the host in a netloc: nothing, or a port (``:`` alone is an empty one).
_PORT = re.compile(r"(?::[0-9]*)?")
#: Longest DNS label and name (RFC 1035).
_MAX_LABEL, _MAX_NAME = 63, 253


def wire_host(host: str) -> str:
    """*host* (as a URL spells it) as the request carries it; ValueError saying what is wrong.

    ``%xx`` escapes are decoded; a name with non-ASCII characters is IDNA-encoded
    (UTS-46: ``ｅｘａｍｐｌｅ`` and ``127。0。0。1`` map to what they look like); an IPv4
    address keeps no trailing dot; an IPv6 literal stays in brackets and may carry no zone
    (``%25eth0``: requests cannot send to one). ASCII names otherwise keep their spelling.
    """
    if host.startswith("["):
        literal = host[1:-1] if host.endswith("]") else ""
        if "%" in literal:
            raise ValueError("has an IPv6 zone (%25...) in its host, which is not supported")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError("has a host in brackets that is no IPv6 address") from None
        return host
    if "%" in host:
        try:
            host = unquote(host, errors="strict")
        except UnicodeDecodeError:
            raise ValueError("has a percent-encoded host that is not UTF-8 text") from None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"has a host that is not a valid internationalised domain name ({exc})") from None
    if not _NAME.fullmatch(host):
        raise ValueError("has a host with an empty label or a character no host name has")
    if len(host.rstrip(".")) > _MAX_NAME or any(len(label) > _MAX_LABEL for label in host.split(".")):
        raise ValueError(f"has a host longer than DNS allows ({_MAX_LABEL} per label, {_MAX_NAME} in all)")
    if host.endswith("."):
        try:
            ipaddress.IPv4Address(host[:-1])
            host = host[:-1]  # "127.0.0.1." names no DNS name: the address itself
        except ValueError:
            pass
    return host


def _split_netloc(netloc: str) -> Tuple[str, str, str]:
    """(``userinfo@`` or "", host, ``:port`` or "") of a URL's *netloc*, the host as written."""
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        return userinfo + at, hostport[:end], hostport[end:]
    host, colon, port = hostport.partition(":")
    return userinfo + at, host, colon + port


def _with_wire_host(url: str, parts: SplitResult) -> str:
    """*url* with its host as :func:`wire_host` gives it; ValueError saying what is wrong."""
    prefix, host, rest = _split_netloc(parts.netloc)
    if not _PORT.fullmatch(rest):
        raise ValueError("has an invalid port or host")
    wired = wire_host(host)
    if wired == host:
        return url
    start = url.index("//") + 2  # the netloc follows the scheme's "//" as written
    if url[start:start + len(parts.netloc)] != parts.netloc:  # urlsplit dropped a tab or line break in it
        raise ValueError("has an invalid port or host")
    return url[:start] + prefix + wired + rest + url[start + len(parts.netloc):]


def with_wire_host(url: str) -> str:
    """*url* (absolute) with its host as the wire carries it, all else as given (a redirect's
    ``Location``, which the transport quotes); ValueError saying what is wrong with the host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError("has an invalid port or host") from None
    if not parts.hostname:
        raise ValueError("has no host")
    return _with_wire_host(url, parts)


def normal_url(url: str, *, base: bool = False) -> str:
    """*url* as a request goes to it (its host by :func:`wire_host`), or ValueError saying why it
    is not an absolute http(s) URL we can send to: a phrase such as ``"needs http:// or https://
    and a host"``, fit to follow ``invalid URL '...':``.

    A *base* URL must also have no query string or fragment: a path joined to it
    would land inside them.
    """
    if any(c in _FORBIDDEN for c in url):
        raise ValueError("contains a space, a line break or a NUL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError("has an invalid port or host") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError("needs http:// or https:// and a host")
    if base and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        raise ValueError("is a base URL and must not have a query string or fragment")
    return _with_wire_host(url, parts)


def url_problem(url: str, *, base: bool = False) -> Optional[str]:
    """Why *url* is not an absolute http(s) URL we can send to (None when it is); see :func:`normal_url`."""
    try:
        normal_url(url, base=base)
    except ValueError as exc:
        return str(exc)
    return None


def check_url(url: str, *, base: bool = False, what: str = "URL") -> str:
    """*url* stripped, its host as the wire carries it (:func:`normal_url`), or ConfigError saying
    why it cannot be used."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {type(url).__name__}")
    url = url.strip()
    try:
        return normal_url(url, base=base)
    except ValueError as exc:
        raise ConfigError(f"invalid {what} {safe_url(url)!r}: {exc}") from None


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
    try:
        return normal_url(joined)
    except ValueError as exc:
        raise ConfigError(f"invalid {what} {_shown(target)!r}: {exc}") from None


def _shown(target: str) -> str:
    """A relative target fit for an error message: its query string (tokens) masked."""
    if target.startswith("//"):
        return safe_url("http:" + target) or ""
    return safe_url(target) or ""


__all__ = ["SCHEMES", "check_url", "is_absolute", "join_url", "normal_url", "url_problem", "wire_host",
           "with_wire_host"]
