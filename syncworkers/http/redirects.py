"""Following a redirect safely: where it goes, with which method, and which headers may go along.

Pure: :func:`follow` takes the request that was redirected and the answer's
``Location`` and returns the next request, or raises when it must not be made.
Credentials never cross to another origin (scheme, host or port): the
``Authorization`` header, cookies, and every header whose name says it is a
secret are dropped. An ``https`` → ``http`` downgrade is refused outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional
from urllib.parse import urljoin, urlsplit

from ..exceptions import RequestError, safe_url
from ..observability.redaction import is_secret_key
from .hosts import DEFAULT_PORTS, origin
from .urls import with_wire_host

#: Statuses that redirect.
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class RedirectRefused(RequestError):
    """A redirect that must not be followed (an https → http downgrade); nothing was sent."""


@dataclass(frozen=True)
class Hop:
    """The request a redirect leads to."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: Optional[bytes]
    cross_origin: bool  #: credentials were dropped


def follow(method: str, url: str, status: int, location: str, headers: Mapping[str, str],
           body: Optional[bytes], is_secret: Callable[[str], bool] = is_secret_key) -> Hop:
    """The next request after *status* with *location*; RedirectRefused for a downgrade.

    303 turns any method but HEAD into GET without a body, and 301/302 turn POST into
    GET (what browsers and requests do); 307/308 keep the method and the body.
    *is_secret* says which headers are credentials: the client's
    :meth:`~syncworkers.observability.redaction.Redactor.is_secret_key`, which knows the
    names its config made secret besides those the name rule catches (``Authorization``,
    ``Cookie``...).
    """
    target = urljoin(url, location.strip())
    if urlsplit(target).scheme.lower() not in DEFAULT_PORTS:
        raise RedirectRefused(f"refused redirect to a non-http(s) URL {safe_url(target)!r}", url=url,
                              method=method, status=status)
    try:
        # The host as the wire carries it (a Unicode or escaped one too), so the guard and the
        # origin rule see the real host; one no transport can send to is refused here.
        target = with_wire_host(target)
    except ValueError as exc:
        raise RedirectRefused(f"refused redirect to an invalid URL {safe_url(target)!r}: {exc}", url=url,
                              method=method, status=status) from None
    if origin(url)[0] == "https" and origin(target)[0] == "http":
        raise RedirectRefused(f"refused redirect from https to http ({safe_url(target)!r})", url=url,
                              method=method, status=status)
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
    cross = origin(url) != origin(target)
    if cross:
        headers = {k: v for k, v in headers.items() if not is_secret(k)}
    return Hop(method, target, dict(headers), body, cross)


__all__ = ["Hop", "REDIRECT_STATUSES", "RedirectRefused", "follow"]
