"""HTTPClient: one pooled client over a transport, with timeouts, retries, breakers and error mapping.

Every request has (connect, read) timeouts and a total deadline per attempt,
goes through the host's circuit breaker, is retried per the RetryConfig (waits
happen on a ``threading.Event``, so a shutdown or a ``fail_fast`` broadcast
cuts them short), reads at most ``max_response_size`` bytes, and fails with an
exception from :mod:`syncworkers.exceptions` — never a bare requests, urllib3
or curl error. The client builds the project's own
:class:`~syncworkers.http.messages.Request` (URL joined, headers merged and
checked, body encoded) and the transport (:mod:`syncworkers.http.transport`:
requests, or libcurl with ``transport="curl"``) answers with a
:class:`~syncworkers.http.messages.Response`. The per-attempt loop (breaker,
retries, host limits, redirects, the attempt hook) lives here, above the seam.
"""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, NamedTuple, Optional, Tuple, Union

import requests
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_auth_from_url, get_netrc_auth, requote_uri

from ..version import __version__
from .breaker import BreakerRegistry, HostBreaker
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
from ..signals import StopSignal
from .messages import HeaderValue, Request, Response
from .outcome import classify_error, classify_status
from .payloads import query_string, request_body
from .retry import RetryPolicy, parse_retry_after
from .limits import HostLimiter, host_key
from .redirects import REDIRECT_STATUSES, Hop, follow
from .transport import Timeout, as_timeouts, make_transport
from .transport.base import deadline_exceeded
from .cookies import cookie_header, has_cookies
from .urls import join_url

DEFAULT_USER_AGENT = f"syncworkers/{__version__} python-requests/{getattr(requests, '__version__')}"
#: Entries kept in each per-URL cache of a client (prepared URLs, breakers) before it is cleared.
_URL_CACHE_SIZE = 1024
#: A merged header set: lowercase name -> (name as given, value), in order.
_HeaderMap = Dict[str, Tuple[str, HeaderValue]]


class _Target(NamedTuple):
    """What a URL a caller asks for comes to, worked out once: the URL sent, its breaker and host key."""

    url: str  #: as requests prepares it (IDNA host, quoted path)
    breaker: HostBreaker
    host: str  #: ``host:port``: what host limits count per
    credentials: bool  #: the URL has userinfo (sent as Basic auth, as requests does)


class _WatchedHeaders(CaseInsensitiveDict):  # type: ignore[type-arg]
    """The session's headers, counting changes so that the client re-reads them only after one."""

    version = 0

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.version += 1


class HTTPClient:
    """A thread-safe HTTP client for one worker.

    *threads* is how many threads will share the client: the per-host pool is
    never smaller, so there is no "Connection pool is full" churn under load.
    *stop_event*, when set, interrupts retry waits (the worker's shutdown).
    ``session`` holds the client's headers and cookies (its headers may be changed
    later; they are read again after a change).
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
        self._timeouts = as_timeouts(self.timeout)
        self._targets: Dict[str, _Target] = {}
        self._multi: Any = None  # the transport's multi driver, once submit() is used
        self._multi_lock = threading.Lock()
        self._absolute_urls: Dict[str, str] = {}
        #: At most ``max_in_flight_per_host`` attempts on the wire to one host:port at once.
        self.limiter = HostLimiter(self.config.max_in_flight_per_host)
        self._defaults: Optional[_HeaderMap] = None  # the session's headers, checked (None: read again)
        self._defaults_of: Tuple[Any, int] = (None, -1)  # (headers object, version) they were read from
        #: Called as ``(url, status, error, seconds)`` after every attempt (each retry too).
        self.on_attempt: Optional[Callable[[str, Optional[int], Optional[BaseException], float], None]] = None

    def _build_session(self) -> requests.Session:
        cfg = self.config
        session = requests.Session()
        session.trust_env = cfg.trust_env
        session.verify = cfg.verify_ssl
        if cfg.ssl_cert_file:
            session.cert = (cfg.ssl_cert_file, cfg.ssl_key_file) if cfg.ssl_key_file else cfg.ssl_cert_file
        headers = _WatchedHeaders(session.headers)
        headers["User-Agent"] = cfg.user_agent or DEFAULT_USER_AGENT
        # Auth first, so that explicitly given headers (default_headers, per call) win over it.
        if cfg.auth_type == "bearer":
            headers["Authorization"] = f"Bearer {cfg.bearer_token}"
        elif cfg.auth_type == "api_key":
            headers[cfg.api_key_header] = cfg.api_key or ""  # validated: set when auth_type is api_key
        elif cfg.auth_type == "basic":
            headers["Authorization"] = f"Basic {cfg.basic_credentials}"
        headers.update(cfg.default_headers)
        session.headers = headers
        return session

    # -- public API -------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """An absolute URL: *url* itself, or *url* joined to ``base_url`` (see :func:`~syncworkers.http.urls.join_url`)."""
        absolute = self._absolute_urls.get(url)
        if absolute is None:
            absolute = join_url(self.config.base_url, url)
            self._remember(self._absolute_urls, url, absolute)
        return absolute

    def request(self, method: str, url: str, *, params: Any = None, headers: Optional[Mapping[str, Any]] = None,
                json: Any = None, data: Any = None, timeout: Optional[Timeout] = None,
                retry: Union[RetryConfig, RetryPolicy, bool, None] = None,
                cancel: Optional[threading.Event] = None,
                allow_redirects: Optional[bool] = None, limit_host: bool = True) -> Response:
        """Send one request with retries; return the final response, whatever its status.

        The response is a :class:`~syncworkers.http.messages.Response` (``status_code``,
        ``headers``, ``content``, ``text``, ``json()``, ``url``, ``reason``, ``elapsed``,
        ``ok``, ``history``, as on a ``requests.Response``); ``response.attempts`` is the
        number of attempts made and ``response.outcome`` its
        :class:`~syncworkers.http.outcome.Outcome`. *retry*: a RetryConfig or
        RetryPolicy for this call, False for a single attempt, None for the
        client's. Raises CircuitOpenError (nothing sent), RequestTimeout /
        TransportError (after retries), ResponseTooLarge, or RetryInterrupted when
        *cancel* (default: the client's stop event) is set during a retry wait.
        With ``max_in_flight_per_host``, each attempt waits for a slot of its host
        (a set *cancel* ends the wait with RetryInterrupted; nothing sent); *limit_host*
        False skips it (a caller that holds a slot of its own limiter, as the outbox does).
        """
        full_url = self.url_for(url)
        built = self.build(method, full_url, params=params, headers=headers, json=json, data=data,
                           timeout=timeout)
        return self.send(built, url=full_url, retry=retry, cancel=cancel, allow_redirects=allow_redirects,
                         limit_host=limit_host)

    def build(self, method: str, url: str, *, params: Any = None, headers: Optional[Mapping[str, Any]] = None,
              json: Any = None, data: Any = None, timeout: Optional[Timeout] = None) -> Request:
        """The :class:`~syncworkers.http.messages.Request` a call sends: *url* (absolute) with *params*,
        the session's headers with *headers* over them (None removes one), cookies, the body of
        *json* / *data*, the timeouts and the deadline. Build once, :meth:`send` as often as needed."""
        method = method.upper()
        target = self._target(url)
        sent_url = target.url
        session = self.session
        if session.params or session.auth is not None:
            return self._build_by_requests(method, url, params, headers, json, data, timeout)
        if params:
            sent_url = _with_query(sent_url, query_string(params))
        merged = self._default_headers()
        copied = False
        if headers:
            merged, copied = dict(merged), True
            for name, value in headers.items():
                if value is None:  # None removes a session header, as in requests
                    merged.pop(name.lower(), None)
                else:
                    check_header(name, value)
                    merged[name.lower()] = (name, value)
        # requests' order: the session's and the call's headers, cookies, the body's type, auth.
        jar = session.cookies
        if has_cookies(jar):
            cookie = cookie_header(jar, sent_url, {pair[0]: pair[1] for pair in merged.values()})
            if cookie is not None:
                if not copied:
                    merged, copied = dict(merged), True
                merged["cookie"] = ("Cookie", cookie)
        body, content_type = request_body(data, json) if data is not None or json is not None else (None, None)
        if content_type is not None and "content-type" not in merged:
            if not copied:
                merged, copied = dict(merged), True
            merged["content-type"] = ("Content-Type", content_type)
        credentials = get_netrc_auth(url) if session.trust_env else None
        if credentials is None and target.credentials:
            credentials = get_auth_from_url(sent_url)
        if credentials is not None and any(credentials):
            if not copied:
                merged, copied = dict(merged), True
            merged["authorization"] = ("Authorization", _basic(*credentials))
        timeouts = self._timeouts if timeout is None else as_timeouts(timeout)
        return Request(method, sent_url, tuple(merged.values()), body, timeouts, self.deadline)

    def send(self, request: Request, *, url: Optional[str] = None,
             retry: Union[RetryConfig, RetryPolicy, bool, None] = None, cancel: Optional[threading.Event] = None,
             allow_redirects: Optional[bool] = None, limit_host: bool = True) -> Response:
        """:meth:`request` for a built *request*: the attempts, retries, breaker and host limit.

        *url* is the URL the caller asked for (before params; what errors, the breaker and
        the host limit go by), by default the request's own.
        """
        cancel = cancel or self.stop_event
        follow = self.config.follow_redirects if allow_redirects is None else allow_redirects
        call = _Attempts(self, request, request.url if url is None else url, self._policy(retry), cancel)
        call.begin()
        try:
            while True:
                call.attempt += 1
                sent_at = self._clock()
                try:
                    response = self._send(request, follow, call.url, call.target.host,
                                          cancel if limit_host else None, call)
                except RetryInterrupted as exc:  # stopped while waiting for a slot: nothing sent
                    exc.attempts = call.attempt - 1
                    raise
                except (TransportError, ResponseTooLarge) as exc:
                    wait = call.failed(exc, sent_at)
                    reason = str(exc)
                else:
                    again = call.answered(response, sent_at)
                    if again is None:
                        return response
                    wait, reason = again, response.outcome.error or ""
                self._pause(wait, reason, call, cancel)
        finally:
            call.end()

    def submit(self, request: Request, *, url: Optional[str] = None,
               retry: Union[RetryConfig, RetryPolicy, bool, None] = None, cancel: Optional[StopSignal] = None,
               limit_host: bool = True) -> "Future[Response]":
        """:meth:`send` without holding a thread: a Future of the response (or of the same error).

        Only with a transport that drives many transfers from one thread (:attr:`can_submit`:
        libcurl's multi interface). The attempts, breaker, retries and host limit are
        :meth:`send`'s; retry waits and waits for a host slot hold no thread and end at
        once when *cancel* is set. Redirects are not followed.
        """
        driver = self._driver()
        future: "Future[Response]" = Future()
        future.set_running_or_notify_cancel()
        signal = cancel if cancel is not None else self._stop_signal()
        call = _Attempts(self, request, request.url if url is None else url, self._policy(retry), signal)
        try:
            call.begin()
        except CircuitOpenError as exc:
            future.set_exception(exc)
            return future
        limiter = self.limiter if limit_host and self.limiter.limit is not None else None
        host = call.target.host
        waiting: List[bool] = [False]  # a retry wait is on

        def fail(exc: BaseException) -> None:
            call.end()
            if not future.done():
                future.set_exception(exc)

        def attempt() -> None:
            waiting[0] = False
            if signal.is_set() and call.attempt:
                fail(RetryInterrupted("retry wait interrupted", url=call.url, method=request.method,
                                      attempts=call.attempt))
            elif limiter is not None:
                limiter.when_free(host, signal, go)
            else:
                go(False)

        def go(held: bool) -> None:
            if limiter is not None and not held:
                fail(RetryInterrupted("interrupted while waiting for a slot of the host", url=call.url,
                                      method=request.method, attempts=call.attempt))
                return
            call.attempt += 1
            sent_at = self._clock()
            span = call.trace.start(call.attempt) if call.trace is not None else None
            sent = _with_headers(request, span.wire) if span is not None else request
            driver.submit(sent, call.url).add_done_callback(lambda done: ended(done, sent_at, held, span))

        def ended(done: "Future[Response]", sent_at: float, held: bool, span: Optional[tracing.Attempt]) -> None:
            if held:
                limiter.release(host)  # type: ignore[union-attr]
            if span is not None:
                span.ended(done.result() if done.exception() is None else None, done.exception())
            try:
                exc = done.exception()
                if exc is None:
                    response = done.result()
                    again = call.answered(response, sent_at)
                    if again is None:
                        call.end()
                        future.set_result(response)
                        return
                    wait, reason = again, response.outcome.error or ""
                elif isinstance(exc, (TransportError, ResponseTooLarge)):
                    wait = call.failed(exc, sent_at)
                    reason = str(exc)
                else:
                    raise exc
            except BaseException as error:
                fail(error)
                return
            self._log_retry(wait, reason, call)
            waiting[0] = True
            driver.call_later(wait, attempt)
            signal.on_set(lambda: driver.call_soon(interrupt))

        def interrupt() -> None:
            if waiting[0]:
                waiting[0] = False
                fail(RetryInterrupted("retry wait interrupted", url=call.url, method=request.method,
                                      attempts=call.attempt))

        driver.call_soon(attempt)
        return future

    @property
    def can_submit(self) -> bool:
        """Whether :meth:`submit` works: the transport drives many transfers from one thread (libcurl)."""
        return getattr(self.transport, "multi", None) is not None

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Response:
        return self.request("POST", url, **kwargs)

    @property
    def in_flight(self) -> int:
        """How many request attempts are on the wire right now (threads inside one, and submitted ones)."""
        multi = self._multi
        return len(self._in_flight) + (multi.in_flight if multi is not None else 0)

    def close(self) -> None:
        """Interrupt retry waits and close pooled connections (submitted requests still on the wire fail)."""
        self.stop_event.set()
        with self._multi_lock:
            multi, self._multi = self._multi, None
        if multi is not None:
            multi.close()
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

    def _driver(self) -> Any:
        """The transport's multi driver, made on first use."""
        multi = self._multi
        if multi is None:
            make = getattr(self.transport, "multi", None)
            if make is None:
                raise ConfigError(f"submit() needs a transport that drives many transfers from one thread "
                                  f"(transport='curl'); this client's is {self.transport.name!r}")
            with self._multi_lock:
                if self._multi is None:
                    self._multi = make()
                multi = self._multi
        return multi

    def _stop_signal(self) -> StopSignal:
        """The client's stop event as a StopSignal (one that tells waiters when it is set)."""
        stop = self.stop_event
        return stop if isinstance(stop, StopSignal) else StopSignal.any(stop)

    def _target(self, url: str) -> _Target:
        """The per-URL pieces of *url*, worked out on its first use."""
        target = self._targets.get(url)
        if target is None:
            target = _Target(_prepared_url(url), self.breakers.for_url(url), host_key(url),
                             "@" in url.split("?", 1)[0].split("#", 1)[0])
            self._remember(self._targets, url, target)
        return target

    def _default_headers(self) -> _HeaderMap:
        """The session's headers, checked, re-read only after they changed (never mutate the result)."""
        headers = self.session.headers
        version = getattr(headers, "version", -1)
        defaults = self._defaults
        if defaults is None or self._defaults_of[0] is not headers or version != self._defaults_of[1] or version < 0:
            merged: _HeaderMap = {}
            for name, value in headers.items():
                problem = header_problem(name, value, caller=False)  # requests' own Connection is fine here
                if problem is not None:
                    raise ValueError(problem)
                merged[name.lower()] = (name, value)
            self._defaults, self._defaults_of = merged, (headers, version)
            defaults = merged
        return defaults

    def _build_by_requests(self, method: str, url: str, params: Any, headers: Optional[Mapping[str, Any]],
                           json: Any, data: Any, timeout: Optional[Timeout]) -> Request:
        """requests' own preparation, for a session given params or an auth object after construction."""
        for name, value in (headers or {}).items():
            if value is not None:  # None removes a session header, as in requests
                check_header(name, value)  # on requests' own path too: the transport's headers are refused
        prepared = self.session.prepare_request(requests.Request(method, url, headers=headers, params=params,
                                                                 json=json, data=data))
        body, _ = request_body(prepared.body, None)
        timeouts = self._timeouts if timeout is None else as_timeouts(timeout)
        pairs = tuple((str(k), v) for k, v in prepared.headers.items() if k.lower() != "content-length")
        return Request(method, prepared.url or url, pairs, body, timeouts, self.deadline)

    @staticmethod
    def _remember(cache: Dict[str, Any], key: str, value: Any) -> None:
        if len(cache) >= _URL_CACHE_SIZE:
            cache.clear()  # many distinct URLs (e.g. query strings): keep the cache bounded
        cache[key] = value

    def _attempted(self, url: str, status: Optional[int], error: Optional[BaseException], sent_at: float) -> None:
        if self.on_attempt is not None:
            self.on_attempt(url, status, error, self._clock() - sent_at)

    def _log_retry(self, wait: float, reason: str, call: "_Attempts") -> None:
        # A webhook is named by its id (its webhook-id header), any other call by its method.
        request = call.request
        delivery_id = request.header("webhook-id")
        subject: Dict[str, Any] = {"delivery_id": delivery_id} if delivery_id else {}
        self.logger.info(("webhook {delivery_id} to {url}" if delivery_id else "{method} {url}")
                         + " failed: {error}; retry in {retry_in}s (attempt {next_attempt} of {max_attempts})",
                         **subject, method=request.method, url=safe_url(call.url), error=reason,
                         retry_in=round(wait, 3), next_attempt=call.attempt + 1,
                         max_attempts=call.policy.max_attempts if call.policy is not None else call.attempt)

    def _pause(self, wait: float, reason: str, call: "_Attempts", cancel: threading.Event) -> None:
        self._log_retry(wait, reason, call)
        if cancel.wait(wait):
            raise RetryInterrupted("retry wait interrupted", url=call.url, method=call.request.method,
                                   attempts=call.attempt)

    def _send(self, request: Request, follow: bool, url: str, host: str,
              cancel: Optional[threading.Event], call: Optional["_Attempts"] = None) -> Response:
        """One attempt, holding a slot of the host (unless *cancel* is None: no slot wanted), a span of *call*'s
        trace."""
        limiter = self.limiter
        held = limiter.limit is not None and cancel is not None
        if held and not limiter.acquire(host, cancel):  # type: ignore[arg-type]
            raise RetryInterrupted("interrupted while waiting for a slot of the host", url=url,
                                   method=request.method)
        me = threading.get_ident()
        self._in_flight[me] = url
        try:
            if call is not None and call.trace is not None:
                return call.trace.send(call.attempt, request, _with_headers,
                                       lambda sent: self._on_wire(sent, follow, url))
            return self._on_wire(request, follow, url)
        finally:
            del self._in_flight[me]
            if held:
                limiter.release(host)

    def _on_wire(self, request: Request, follow: bool, url: str) -> Response:
        if not follow:
            return self.transport.send(request, url=url)
        return self._send_following(request, url)

    def _send_following(self, request: Request, url: str) -> Response:
        """One attempt that follows redirects itself (the same for every transport).

        Each hop goes through :func:`~syncworkers.http.redirects.follow`: credentials never
        cross to another origin, an https → http downgrade is refused, and the whole
        chain shares the attempt's deadline.
        """
        started = self._clock()
        history: List[Response] = []
        method = request.method
        while True:
            left = self.deadline - (self._clock() - started)
            if left <= 0:
                raise deadline_exceeded(self.deadline, url, method)
            try:
                # The first hop has the whole deadline; later ones what is left of it.
                response = self.transport.send(request._replace(deadline=left) if history else request, url=url)
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
                raise RequestError("too many redirects", url=url, method=method, status=response.status_code)
            hop = follow(request.method, request.url, response.status_code, location,
                         {str(name): value for name, value in request.headers},  # type: ignore[misc]
                         request.body, self.redactor.is_secret_key)
            history.append(response)
            request = self._hop_request(hop, request)

    def _hop_request(self, hop: Hop, previous: Request) -> Request:
        """The request a redirect leads to; cookies from the jar only on the same origin."""
        url = _prepared_url(hop.url)
        headers: Dict[str, Tuple[str, HeaderValue]] = {
            name.lower(): (name, value) for name, value in hop.headers.items()}
        headers.pop("cookie", None)  # recomputed for the new URL, or dropped with the origin
        if hop.body is None:
            headers.pop("content-length", None)
            headers.pop("transfer-encoding", None)
        jar = self.session.cookies
        # A cookie jar ignores ports: only the origin rule keeps host A's cookies from host B.
        if not hop.cross_origin and has_cookies(jar):
            cookie = cookie_header(jar, url, {pair[0]: pair[1] for pair in headers.values()})
            if cookie is not None:
                headers["cookie"] = ("Cookie", cookie)
        return previous._replace(method=hop.method, url=url, headers=tuple(headers.values()), body=hop.body)


class _Attempts:
    """The bookkeeping of one call's attempts, shared by :meth:`HTTPClient.send` (a thread) and
    :meth:`HTTPClient.submit` (callbacks): the breaker's verdict, the attempt hook, the outcome and
    whether the retry policy wants another attempt."""

    __slots__ = ("client", "request", "url", "policy", "cancel", "target", "attempt", "settled", "trace")

    def __init__(self, client: HTTPClient, request: Request, url: str, policy: Optional[RetryPolicy],
                 cancel: threading.Event) -> None:
        self.client = client
        self.request = request
        self.url = url
        self.policy = policy
        self.cancel = cancel
        self.target = client._target(url)
        self.attempt = 0
        self.settled = False
        #: Each attempt's span, when tracing is on (its parent: the request's traceparent, else the current span).
        self.trace = (tracing.begin(request.method, request.url, request.headers, client.redactor)
                      if tracing.enabled else None)

    def begin(self) -> None:
        """Ask the host's breaker; CircuitOpenError (nothing sent) when its circuit is open."""
        try:
            self.target.breaker.before_request()
        except CircuitOpenError as exc:
            raise CircuitOpenError(str(exc), host=exc.host, remaining=exc.remaining, url=self.url,
                                   method=self.request.method) from None

    def answered(self, response: Response, sent_at: float) -> Optional[float]:
        """Seconds to wait before another attempt, or None: *response* is final (annotated)."""
        client = self.client
        status = response.status_code
        client._attempted(self.url, status, None, sent_at)
        if 200 <= status < 300:
            outcome = classify_status(status)
        else:
            outcome = classify_status(status, response.reason,
                                      retry_after=parse_retry_after(response.headers.get("Retry-After")))
        response.outcome = outcome
        if self.policy is not None and not outcome.ok:
            decision = self.policy.next(outcome, self.attempt)
            if decision.wait is not None:
                return decision.wait
        self.target.breaker.record_outcome(outcome)
        self.settled = True
        response.attempts = self.attempt
        return None

    def failed(self, exc: RequestError, sent_at: float) -> float:
        """Seconds to wait before another attempt; re-raises *exc* when it is final."""
        self.client._attempted(self.url, exc.status, exc, sent_at)
        outcome = classify_error(exc)
        # Requests that may have reached the receiver (a refused address sent nothing).
        exc.attempts = self.attempt if outcome.sent else self.attempt - 1
        decision = None if self.policy is None else self.policy.next(outcome, self.attempt)
        if decision is None or decision.wait is None:
            self.target.breaker.record_outcome(outcome, exc)
            self.settled = True
            raise exc
        return decision.wait

    def end(self) -> None:
        """The call is over: an unsettled one frees the breaker's probe permit."""
        if not self.settled:
            self.settled = True
            self.target.breaker.release()


def _with_headers(request: Request, headers: Mapping[str, str]) -> Request:
    """*request* with *headers* set (an attempt's ``traceparent``)."""
    for name, value in headers.items():
        request = request.with_header(name, value)
    return request


def _prepared_url(url: str) -> str:
    """*url* as requests sends it (IDNA host, quoted path): its own rule, asked once per URL."""
    prepared = PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url or url


def _with_query(url: str, query: str) -> str:
    """*url* with *query* added to its query string (before any fragment), as requests adds params."""
    if not query:
        return url
    base, hash_, fragment = url.partition("#")
    joined = f"{base}&{query}" if "?" in base and not base.endswith("?") else (
        f"{base}{query}" if base.endswith("?") else f"{base}?{query}")
    return requote_uri(joined + hash_ + fragment)


def _basic(user: str, password: str) -> str:
    """An ``Authorization`` value for Basic auth (Latin-1 credentials, as requests encodes them)."""
    token = base64.b64encode(f"{user}:{password}".encode("latin-1")).decode("ascii")
    return f"Basic {token}"


def merge_headers(*layers: Optional[Mapping[str, str]]) -> MutableMapping[str, str]:
    """Case-insensitive merge, later layers winning."""
    merged: MutableMapping[str, str] = requests.structures.CaseInsensitiveDict()
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged


__all__ = ["HTTPClient", "DEFAULT_USER_AGENT", "Request", "Response", "merge_headers"]
