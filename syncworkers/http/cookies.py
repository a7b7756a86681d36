"""The client's cookies: which ones a request carries, and keeping those an answer sets.

The jar is the client's ``session.cookies`` (a ``RequestsCookieJar``), read and
written through the standard library's cookie rules as requests does, so the
transports agree: the requests adapter lets requests store answers' cookies,
the libcurl transport calls :func:`store_cookies`.
"""

from __future__ import annotations

import email.message
from http.cookiejar import CookieJar
from typing import Any, Dict, Iterable, Optional

from requests import cookies as _requests_cookies
from requests.cookies import MockRequest

from .messages import HeaderValue, Request


#: requests' own rule (typed differently by requests and by types-requests: called as it is).
_get_cookie_header: Any = _requests_cookies.get_cookie_header


class CookieRequest:
    """What requests' ``MockRequest`` reads of a request: its URL and headers."""

    __slots__ = ("url", "headers")

    def __init__(self, url: str, headers: Dict[str, HeaderValue]) -> None:
        self.url = url
        self.headers = headers


class _CookieResponse:
    """The little of an http.client response that ``CookieJar.extract_cookies`` reads."""

    def __init__(self, headers: email.message.Message) -> None:
        self._headers = headers

    def info(self) -> email.message.Message:
        return self._headers


def has_cookies(jar: CookieJar) -> bool:
    """True when *jar* holds any cookie (without counting them all)."""
    for _ in jar:
        return True
    return False


def cookie_header(jar: CookieJar, url: str, headers: Dict[str, HeaderValue]) -> Optional[str]:
    """The ``Cookie`` header *jar* gives a request to *url* (None: none, or the request names its own)."""
    header = _get_cookie_header(jar, CookieRequest(url, headers))
    return header if isinstance(header, str) else None


def store_cookies(jar: CookieJar, values: Iterable[str], request: Request) -> None:
    """Keep the ``Set-Cookie`` *values* of the answer to *request* in *jar*."""
    msg = email.message.Message()
    for value in values:
        msg["Set-Cookie"] = value
    fake: Any = _CookieResponse(msg)
    jar.extract_cookies(fake, MockRequest(CookieRequest(request.url, dict(request.headers))))  # type: ignore[arg-type]


__all__ = ["CookieRequest", "cookie_header", "has_cookies", "store_cookies"]
