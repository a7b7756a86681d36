"""The default transport: a pooled ``requests.Session``, with a real total deadline per attempt.

An adapter at the seam: the project's :class:`~syncworkers.http.messages.Request`
becomes a ``requests.PreparedRequest`` (through requests' public API) and the answer
a :class:`~syncworkers.http.messages.Response`, so ``responses``-based tests and
adapters mounted on the session keep working.
"""

from __future__ import annotations

from typing import Any, Dict, NoReturn, Optional

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from ...config.settings import HTTPClientConfig
from ..netguard import AddressPolicy
from ...exceptions import ConfigError, RequestError, RequestTimeout, TransportError, safe_url
from ..messages import Headers, Request, Response
from .base import deadline_exceeded, too_large
from .deadline import WATCHDOG, Attempt, Watchdog
from .pool import pool_classes

#: Chunk size for reading bodies under the size cap.
_CHUNK = 64 * 1024


class _Adapter(HTTPAdapter):
    """HTTPAdapter whose pools bound idle connections and expire stale ones."""

    def __init__(self, config: HTTPClientConfig, pool_maxsize: int, clock: Any) -> None:
        max_idle = config.max_keepalive_connections
        self._pool_classes = pool_classes(config.keepalive_expiry,
                                          pool_maxsize if max_idle is None else max_idle, clock,
                                          AddressPolicy.of(config))
        # Retries are driven by HTTPClient (interruptible waits, breaker bookkeeping):
        # the adapter makes exactly one attempt.
        super().__init__(pool_connections=32, pool_maxsize=pool_maxsize,
                         max_retries=Retry(0, read=False, redirect=False), pool_block=False)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


class RequestsTransport:
    """Sends through *session* (mounting pools sized *pool_size* on it).

    The read timeout bounds each socket read; the deadline bounds the whole
    attempt: the shared watchdog shuts an overrunning attempt's socket down, and
    the body loop checks the deadline between chunks.
    """

    name = "requests"

    def __init__(self, config: HTTPClientConfig, session: requests.Session, pool_size: int,
                 clock: Any, watchdog: Watchdog = WATCHDOG) -> None:
        self.config = config
        self.session = session
        self.watchdog = watchdog
        adapter = _Adapter(config, pool_size, clock)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Settings requests would otherwise merge into every call, resolved once.
        self._send_kwargs: Dict[str, Any] = {"verify": session.verify, "cert": session.cert, "proxies": {}, "stream": True}
        # The jar a prepared request carries for requests' redirect bookkeeping: HTTPClient
        # puts the Cookie header in the request itself, so it stays empty.
        self._no_cookies = RequestsCookieJar()

    def send(self, request: Request, *, url: str) -> Response:
        session = self.session
        kwargs = self._send_kwargs
        method, deadline = request.method, request.deadline
        if session.trust_env:
            # Proxy variables (HTTP_PROXY, NO_PROXY, ...) and REQUESTS_CA_BUNDLE, resolved per URL.
            kwargs = dict(session.merge_environment_settings(request.url, {}, True, session.verify, session.cert))
            kwargs["stream"] = True
        connect, read = request.timeouts
        timeout = (min(connect, deadline), min(read, deadline))
        prepared = self._prepared(request)
        attempt = self.watchdog.arm(deadline)
        try:
            try:
                response = session.send(prepared, timeout=timeout, allow_redirects=False, **kwargs)
            except Exception as exc:
                _reraise(exc, attempt, deadline, url, method)
            try:
                content = self._read_body(response, url, method, attempt, deadline)
            except RequestError:
                raise
            except Exception as exc:
                response.close()
                _reraise(exc, attempt, deadline, url, method)
            if attempt.expired:
                # The shutdown may have ended a body read to the close as if complete.
                raise deadline_exceeded(deadline, url, method)
        finally:
            self.watchdog.disarm(attempt)
        return Response(response.status_code, Headers(list(response.headers.items())), content,
                        response.url or request.url, reason=response.reason,
                        seconds=response.elapsed.total_seconds(), request=request)

    def _prepared(self, request: Request) -> PreparedRequest:
        """*request* as requests sends it, built through its public API (nothing prepared twice)."""
        p = PreparedRequest()
        p.method = request.method
        p.url = request.url
        # (A bytes value goes on the wire as its Latin-1 text would.)
        p.headers = CaseInsensitiveDict({name: value.decode("latin-1") if isinstance(value, bytes) else value
                                         for name, value in request.headers})
        p.body = request.body
        p.prepare_content_length(request.body)
        p.prepare_cookies(self._no_cookies)
        return p

    def _read_body(self, response: requests.Response, url: str, method: str, attempt: Attempt,
                   deadline: float) -> bytes:
        """Read the whole body, refusing more than max_response_size bytes."""
        cap = self.config.max_response_size
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > cap:
            response.close()
            raise too_large(cap, url, method, response.status_code, length)
        chunks = []
        total = 0
        for chunk in response.iter_content(_CHUNK):
            if attempt.overdue():  # an endless body that never stalls long enough to be cut
                response.close()
                raise deadline_exceeded(deadline, url, method)
            total += len(chunk)
            if total > cap:
                response.close()
                raise too_large(cap, url, method, response.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.session.close()


def _reraise(exc: Exception, attempt: Attempt, deadline: float, url: str, method: str) -> NoReturn:
    """Raise the error an attempt that failed with *exc* ends in.

    Past the deadline it is a timeout, whatever the shutdown made requests say.
    """
    if attempt.overdue():
        raise deadline_exceeded(deadline, url, method, exc) from exc
    mapped = _mapped(exc, url, method)
    if mapped is None:
        raise exc
    raise mapped from exc


def _mapped(exc: Exception, url: str, method: str) -> Optional[Exception]:
    """One of our errors for a requests error; None for any other error."""
    if isinstance(exc, TransportError) and exc.url is None:
        # The SSRF guard's refusal (or its failed lookup), raised while connecting: name the request.
        return type(exc)(str(exc), url=url, method=method)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return RequestTimeout("connect timeout", url=url, method=method, cause=exc)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return RequestTimeout("read timeout", url=url, method=method, cause=exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return TransportError(f"TLS error: {_describe(exc)}", url=url, method=method, cause=exc)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return TransportError(f"connection failed: {_describe(exc)}", url=url, method=method, cause=exc)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return ConfigError(f"invalid URL {safe_url(url)!r}")
    return None


def _describe(exc: BaseException) -> str:
    """A short reason without the URL requests puts in its messages."""
    inner: Any = exc.args[0] if exc.args else exc
    if isinstance(inner, MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    text = str(inner)
    if isinstance(inner, ProtocolError) and inner.args and len(inner.args) > 1:
        text = f"{inner.args[0]} {type(inner.args[1]).__name__}"
    # urllib3 prefixes "<connection object at 0x...>: " or "HTTPConnectionPool(host=..): "
    return text.rsplit("): ", 1)[-1].rsplit(">: ", 1)[-1][:200]


__all__ = ["RequestsTransport"]
