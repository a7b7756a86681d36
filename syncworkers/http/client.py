"""HTTPClient: one pooled client over a transport, with timeouts, retries, breakers and error mapping.

Every request has (connect, read) timeouts and a total deadline per attempt,
goes through the host's circuit breaker, is retried per the RetryConfig (waits
happen on a ``threading.Event``, so a shutdown or a ``fail_fast`` broadcast
cuts them short), reads at most ``max_response_size`` bytes, and fails with an
exception from :mod:`syncworkers.exceptions` — never a bare requests, urllib3
or curl error. The transport (:mod:`syncworkers.http.transport`) is requests, or
libcurl with ``transport="curl"``; requests always prepares the request.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Tuple, Union, cast

import requests
from requests.cookies import RequestsCookieJar, get_cookie_header
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import to_native_string  # type: ignore[attr-defined]  # requests re-exports it untyped

from ..version import __version__
from .breaker import BreakerRegistry
from .headers import check_header, header_problem
from ..config.settings import HTTPClientConfig, RetryConfig
from ..config.validators import checked, count
from ..exceptions import (
    CircuitOpenError,
    ConfigError,
    RequestError,
    RequestTimeout,
    ResponseTooLarge,
    RetryInterrupted,
    TransportError,
    safe_url,
)
from ..observability import tracing
from ..observability.logging import get_logger, install_urllib3_redaction
from ..observability.redaction import Redactor
from .outcome import classify_error, classify_status
from .retry import RetryPolicy, parse_retry_after
from .limits import HostLimiter, host_key
from .redirects import REDIRECT_STATUSES, Hop, follow
from .transport import Timeout, as_timeouts, make_transport
from .transport.base import deadline_exceeded
from .urls import join_url

DEFAULT_USER_AGENT = f"syncworkers/{__version__} python-requests/{requests.__version__}"  # type: ignore[attr-defined]
#: Entries kept in each per-URL cache of a client (prepared URLs, breakers) before it is cleared.
_URL_CACHE_SIZE = 1024

class HTTPClient:
    """A thread-safe HTTP client for one worker.

    *threads* is how many threads will share the client: the per-host pool is
    never smaller, so there is no "Connection pool is full" churn under load.
    *stop_event*, when set, interrupts retry waits (the worker's shutdown).
    The config's credentials and secret header names go into *redactor* (a new one
    when None: ``self.redactor``), which its logger and urllib3's log filter mask with.
    *clock* (monotonic seconds) times attempts, deadlines and the circuit breakers.
    """

    def __init__(self, config: Optional[HTTPClientConfig] = None, *, threads: int = 1,
                 breakers: Optional[BreakerRegistry] = None, stop_event: Optional[threading.Event] = None,
                 clock: Callable[[], float] = time.monotonic, logger: Any = None,
                 redactor: Optional[Redactor] = None) -> None:
        if config is not None and not isinstance(config, HTTPClientConfig):
            raise ConfigError(f"config must be an HTTPClientConfig, got {type(config).__name__}",
                              {"config": "must be an HTTPClientConfig"})
        if not callable(clock):
            raise ConfigError(f"clock must be callable, got {clock!r}", {"clock": "must be callable"})
        if stop_event is not None and not callable(getattr(stop_event, "wait", None)):
            raise ConfigError(f"stop_event must be a threading.Event, got {type(stop_event).__name__}",
                              {"stop_event": "must be a threading.Event"})
        self.config = config if config is not None else HTTPClientConfig.from_env()
        self.timeout: Tuple[float, float] = self.config.timeouts
        self.retry_config: RetryConfig = self.config.effective_retry
        self._clock = clock
        self.breakers = breakers or BreakerRegistry(self.config.effective_breaker, clock=clock)
        self.stop_event = stop_event or threading.Event()
        #: What this client's logger and urllib3's log lines mask: the config's secrets told to *redactor*.
        self.redactor = self.config.redactor(redactor)
        install_urllib3_redaction(self.redactor)
        self.logger = logger or get_logger("syncworkers.http.client", redactor=self.redactor)
        self.pool_size = max(self.config.max_connections, checked("threads", threads, count(text=False)))
        self.session = self._build_session()
        self.transport = make_transport(self.config, self.session, self.pool_size, clock)
        self.deadline = self.config.effective_deadline
        # Threads inside the transport now (ident -> URL): stop() guarantees rely on it.
        self._in_flight: Dict[int, str] = {}
        #: The in-call retry policy (immutable: one value serves every call).
        self.retry_policy = RetryPolicy.from_config(self.retry_config)
        self._prepared_urls: Dict[str, str] = {}
        self._absolute_urls: Dict[str, str] = {}
        self._breaker_of: Dict[str, Any] = {}
        self._host_of: Dict[str, str] = {}
        #: At most ``max_in_flight_per_host`` attempts on the wire to one host:port at once.
        self.limiter = HostLimiter(self.config.max_in_flight_per_host)
        self._header_store = self._validated_header_store()
        #: Called as ``(url, status, error, seconds)`` after every attempt (each retry too).
        self.on_attempt: Optional[Callable[[str, Optional[int], Optional[BaseException], float], None]] = None

    def _build_session(self) -> requests.Session:
        cfg = self.config
        session = requests.Session()
        session.trust_env = cfg.trust_env
        session.verify = cfg.verify_ssl
        if cfg.ssl_cert_file:
            session.cert = (cfg.ssl_cert_file, cfg.ssl_key_file) if cfg.ssl_key_file else cfg.ssl_cert_file
        headers = session.headers
        headers["User-Agent"] = cfg.user_agent or DEFAULT_USER_AGENT
        # Auth first, so that explicitly given headers (default_headers, per call) win over it.
        if cfg.auth_type == "bearer":
            headers["Authorization"] = f"Bearer {cfg.bearer_token}"
        elif cfg.auth_type == "api_key":
            headers[cfg.api_key_header] = cfg.api_key or ""  # validated: set when auth_type is api_key
        elif cfg.auth_type == "basic":
            headers["Authorization"] = f"Basic {cfg.basic_credentials}"
        headers.update(cfg.default_headers)
        return session

    # -- public API -------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """An absolute URL: *url* itself, or *url* joined to ``base_url`` (see :func:`~syncworkers.http.urls.join_url`)."""
        absolute = self._absolute_urls.get(url)
        if absolute is None:
            absolute = join_url(self.config.base_url, url)
            self._remember(self._absolute_urls, url, absolute)
        return absolute

    def request(self, method: str, url: str, *, params: Any = None, headers: Optional[Mapping[str, str]] = None,
                json: Any = None, data: Any = None, timeout: Optional[Timeout] = None,
                retry: Union[RetryConfig, RetryPolicy, bool, None] = None,
                cancel: Optional[threading.Event] = None,
                allow_redirects: Optional[bool] = None, limit_host: bool = True) -> requests.Response:
        """Send one request with retries; return the final response, whatever its status.

        ``response.attempts`` is the number of attempts made and ``response.outcome``
        its :class:`~syncworkers.http.outcome.Outcome`. *retry*: a RetryConfig or
        RetryPolicy for this call, False for a single attempt, None for the
        client's. Raises CircuitOpenError (nothing sent), RequestTimeout /
        TransportError (after retries), ResponseTooLarge, or RetryInterrupted when
        *cancel* (default: the client's stop event) is set during a retry wait.
        With ``max_in_flight_per_host``, each attempt waits for a slot of its host
        (a set *cancel* ends the wait with RetryInterrupted; nothing sent); *limit_host*
        False skips it (a caller that holds a slot of its own limiter, as the outbox does).
        """
        method = method.upper()
        full_url = self.url_for(url)
        prepared = self._prepare(method, full_url, params, headers, json, data)
        policy = self._policy(retry)
        max_attempts = 1 if policy is None else policy.max_attempts
        cancel = cancel or self.stop_event
        follow = self.config.follow_redirects if allow_redirects is None else allow_redirects
        timeout = self.timeout if timeout is None else timeout
        breaker = self._breaker_of.get(full_url)
        if breaker is None:
            breaker = self.breakers.for_url(full_url)
            self._remember(self._breaker_of, full_url, breaker)
        try:
            breaker.before_request()
        except CircuitOpenError as exc:
            raise CircuitOpenError(str(exc), host=exc.host, remaining=exc.remaining, url=full_url,
                                   method=method) from None
        attempt = 0
        settled = False
        trace = tracing.begin(method, prepared.url or full_url, headers, self.redactor) if tracing.enabled else None
        try:
            while True:
                attempt += 1
                sent_at = self._clock()
                try:
                    # Sending does not change a prepared request: only a retry needs a fresh copy.
                    response = self._send(prepared if attempt == 1 else prepared.copy(), timeout, follow,
                                          full_url, method, cancel if limit_host else None, trace, attempt)
                except RetryInterrupted as exc:  # stopped while waiting for a slot: nothing sent
                    exc.attempts = attempt - 1
                    raise
                except (TransportError, ResponseTooLarge) as exc:
                    self._attempted(full_url, exc.status, exc, sent_at)
                    outcome = classify_error(exc)
                    # Requests that may have reached the receiver (a refused address sent nothing).
                    exc.attempts = attempt if outcome.sent else attempt - 1
                    decision = None if policy is None else policy.next(outcome, attempt)
                    if decision is None or decision.wait is None:
                        breaker.record_outcome(outcome, exc)
                        settled = True
                        raise
                    self._pause(decision.wait, str(exc), attempt, max_attempts, method, full_url, cancel, headers)
                    continue
                self._attempted(full_url, response.status_code, None, sent_at)
                outcome = classify_status(response.status_code, response.reason,
                                          retry_after=parse_retry_after(response.headers.get("Retry-After")))
                if policy is not None and not outcome.ok:
                    decision = policy.next(outcome, attempt)
                    if decision.wait is not None:
                        response.close()
                        self._pause(decision.wait, outcome.error or "", attempt, max_attempts, method, full_url,
                                    cancel, headers)
                        continue
                breaker.record_outcome(outcome)
                settled = True
                response.attempts = attempt  # type: ignore[attr-defined]
                response.outcome = outcome  # type: ignore[attr-defined]
                return response
        finally:
            if not settled:
                breaker.release()

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    @property
    def in_flight(self) -> int:
        """How many threads are inside a request attempt (on the wire) right now."""
        return len(self._in_flight)

    def close(self) -> None:
        """Interrupt retry waits and close pooled connections."""
        self.stop_event.set()
        self.transport.close()
        self.session.close()

    def __enter__(self) -> "HTTPClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        cfg = self.config
        return (f"HTTPClient(base_url={safe_url(cfg.base_url)!r}, auth_type={cfg.auth_type!r}, "
                f"pool_size={self.pool_size}, timeout={self.timeout!r})")

    # -- internals ----------------------------------------------------------------

    def _policy(self, retry: Union[RetryConfig, RetryPolicy, bool, None]) -> Optional[RetryPolicy]:
        if retry is False:
            return None
        if isinstance(retry, RetryPolicy):
            return retry
        if isinstance(retry, RetryConfig):
            return RetryPolicy.from_config(retry)
        return self.retry_policy

    def _prepare(self, method: str, url: str, params: Any, headers: Optional[Mapping[str, str]],
                 json: Any, data: Any) -> PreparedRequest:
        """What ``session.prepare_request`` makes, without its per-call merging.

        The session's headers are validated once, the prepared URL is cached,
        and the cookie jar is consulted only when it holds cookies. A session
        with auth, params, response hooks, trust_env (netrc) or headers changed
        since construction takes requests' own path.
        """
        session = self.session
        for name, value in (headers or {}).items():
            if value is not None:  # None removes a session header, as in requests
                check_header(name, value)  # on requests' own path too: the transport's headers are refused
        store = getattr(session.headers, "_store", None)
        if (session.trust_env or session.auth is not None or session.params or any(session.hooks.values())
                or store is None or store != self._header_store):
            return session.prepare_request(requests.Request(method, url, headers=headers, params=params,
                                                            json=json, data=data))
        p = PreparedRequest()
        p.method = method
        if params:
            p.prepare_url(url, params)
        else:
            p.url = self._prepared_urls.get(url)
            if p.url is None:
                p.prepare_url(url, None)
                self._remember(self._prepared_urls, url, p.url)
        merged: CaseInsensitiveDict[Union[str, bytes]] = CaseInsensitiveDict()
        merged._store = store.copy()  # the session's headers, validated when stored
        if headers is not None:
            for name, value in headers.items():
                if value is None:  # None removes a session header, as in requests
                    merged._store.pop(to_native_string(name).lower(), None)
                else:
                    merged[to_native_string(name)] = value
        p.headers = merged
        p._cookies = RequestsCookieJar()
        if session.cookies:
            p._cookies.update(session.cookies)
            cookie = get_cookie_header(p._cookies, p)
            if cookie is not None:
                p.headers["Cookie"] = cookie
        p.prepare_body(data, None, json)
        if p.url is not None and "@" in p.url:
            p.prepare_auth(None, p.url)  # credentials in the URL, as requests takes them
        return p

    def _validated_header_store(self) -> Any:
        """A copy of the session's header store once every header passed the header rule, else None."""
        headers = self.session.headers
        store = getattr(headers, "_store", None)
        if any(header_problem(name, value, caller=False) is not None for name, value in headers.items()):
            return None  # requests' own path raises the error on each request, as before
        return None if store is None else store.copy()

    @staticmethod
    def _remember(cache: Dict[str, Any], key: str, value: Any) -> None:
        if len(cache) >= _URL_CACHE_SIZE:
            cache.clear()  # many distinct URLs (e.g. query strings): keep the cache bounded
        cache[key] = value

    def _attempted(self, url: str, status: Optional[int], error: Optional[BaseException], sent_at: float) -> None:
        if self.on_attempt is not None:
            self.on_attempt(url, status, error, self._clock() - sent_at)

    def _pause(self, wait: float, reason: str, attempt: int, max_attempts: int, method: str, url: str,
               cancel: threading.Event, headers: Optional[Mapping[str, str]]) -> None:
        # A webhook is named by its id (the call's webhook-id header), any other call by its method.
        delivery_id = headers.get("webhook-id") if headers else None
        subject: Dict[str, Any] = {"delivery_id": delivery_id} if delivery_id else {}
        self.logger.info(("webhook {delivery_id} to {url}" if delivery_id else "{method} {url}")
                         + " failed: {error}; retry in {retry_in}s (attempt {next_attempt} of {max_attempts})",
                         **subject, method=method, url=safe_url(url), error=reason, retry_in=round(wait, 3),
                         next_attempt=attempt + 1, max_attempts=max_attempts)
        if cancel.wait(wait):
            raise RetryInterrupted("retry wait interrupted", url=url, method=method, attempts=attempt)

    def _send(self, prepared: requests.PreparedRequest, timeout: Timeout, follow: bool,
              url: str, method: str, cancel: Optional[threading.Event], trace: Optional[tracing.Call] = None,
              attempt: int = 1) -> requests.Response:
        """One attempt, holding a slot of the host (unless *cancel* is None: no slot wanted), a span of *trace*."""
        limiter = self.limiter
        host = ""
        if limiter.limit is not None and cancel is not None:
            host = self._host_of.get(url) or ""
            if not host:
                host = host_key(url)
                self._remember(self._host_of, url, host)
            if not limiter.acquire(host, cancel):
                raise RetryInterrupted("interrupted while waiting for a slot of the host", url=url, method=method)
        me = threading.get_ident()
        self._in_flight[me] = url
        try:
            timeouts = as_timeouts(timeout)
            if trace is not None:
                return trace.send(attempt, prepared, _with_headers,
                                  lambda sent: self._on_wire(sent, timeouts, follow, url, method))
            return self._on_wire(prepared, timeouts, follow, url, method)
        finally:
            del self._in_flight[me]
            if host:
                limiter.release(host)

    def _on_wire(self, prepared: PreparedRequest, timeouts: Tuple[float, float], follow: bool, url: str,
                 method: str) -> requests.Response:
        if not follow:
            return self.transport.send(prepared, timeouts=timeouts, deadline=self.deadline, url=url, method=method)
        return self._send_following(prepared, timeouts, url, method)

    def _send_following(self, request: PreparedRequest, timeouts: Tuple[float, float], url: str,
                        method: str) -> requests.Response:
        """One attempt that follows redirects itself (the same for every transport).

        Each hop goes through :func:`~syncworkers.http.redirects.follow`: credentials never
        cross to another origin, an https → http downgrade is refused, and the whole
        chain shares the attempt's deadline.
        """
        started = self._clock()
        history: List[requests.Response] = []
        while True:
            left = self.deadline - (self._clock() - started)
            if left <= 0:
                raise deadline_exceeded(self.deadline, url, method)
            try:
                # The first hop has the whole deadline; later ones what is left of it.
                response = self.transport.send(request, timeouts=timeouts, deadline=left if history else self.deadline,
                                               url=url, method=method)
            except RequestTimeout as exc:
                if history and str(exc).startswith("deadline of"):
                    raise deadline_exceeded(self.deadline, url, method, exc) from exc
                raise
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                if history:
                    response.history = history
                return response
            if len(history) >= self.config.max_redirects:
                response.close()
                raise RequestError("too many redirects", url=url, method=method, status=response.status_code)
            hop = follow(request.method or method, request.url or url, response.status_code, location,
                         cast(Mapping[str, str], request.headers), _body_bytes(request.body),
                         self.redactor.is_secret_key)
            response.close()
            history.append(response)
            request = self._hop_request(hop)

    def _hop_request(self, hop: Hop) -> PreparedRequest:
        """The request a redirect leads to; cookies from the jar only on the same origin."""
        p = PreparedRequest()
        p.method = hop.method
        p.prepare_url(hop.url, None)
        headers: Any = CaseInsensitiveDict(hop.headers)
        headers.pop("Cookie", None)  # recomputed for the new URL, or dropped with the origin
        if hop.body is None:
            headers.pop("Content-Length", None)
            headers.pop("Transfer-Encoding", None)
        p.headers = headers
        p._cookies = RequestsCookieJar()
        # A cookie jar ignores ports: only the origin rule keeps host A's cookies from host B.
        if not hop.cross_origin and self.session.cookies:
            p._cookies.update(self.session.cookies)
            cookie = get_cookie_header(p._cookies, p)
            if cookie is not None:
                headers["Cookie"] = cookie
        p.body = hop.body
        return p




def _with_headers(prepared: PreparedRequest, headers: Mapping[str, str]) -> PreparedRequest:
    """A copy of *prepared* with *headers* set (a trace's ``traceparent``)."""
    copy = prepared.copy()
    copy.headers.update(headers)
    return copy


def _body_bytes(body: Any) -> Optional[bytes]:
    """A prepared body as bytes for a 307/308 hop (requests leaves str there for form data)."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    raise RequestError("cannot follow a redirect with a streamed body")


def merge_headers(*layers: Optional[Mapping[str, str]]) -> MutableMapping[str, str]:
    """Case-insensitive merge, later layers winning."""
    merged: MutableMapping[str, str] = requests.structures.CaseInsensitiveDict()
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged


__all__ = ["HTTPClient", "DEFAULT_USER_AGENT", "merge_headers"]
