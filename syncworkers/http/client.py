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

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Tuple, Union

import requests

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
from ..observability.logging import get_logger, install_urllib3_redaction
from ..observability.redaction import Redactor
from ..signals import StopSignal
from .attempts import Attempts, with_headers
from .breaker import BreakerRegistry
from .building import DEFAULT_USER_AGENT, RequestBuilder, new_session
from .limits import HostLimiter
from .messages import Request, Response
from .redirects import REDIRECT_STATUSES, follow
from .retry import RetryPolicy
from .submission import Submission
from .transport import Timeout, make_transport
from .transport.base import deadline_exceeded


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
        self.session = new_session(self.config)
        self.transport = make_transport(self.config, self.session, self.pool_size, clock)
        self.deadline = self.config.effective_deadline
        #: Builds what each call sends (the project's Request) and the per-URL pieces.
        self.builder = RequestBuilder(self.config, self.session, self.breakers, self.timeout, self.deadline)
        # Threads inside the transport now (ident -> URL): stop() guarantees rely on it.
        self._in_flight: Dict[int, str] = {}
        #: The in-call retry policy (immutable: one value serves every call).
        self.retry_policy = RetryPolicy.from_config(self.retry_config)
        self._multi: Any = None  # the transport's multi driver, once submit() is used
        self._multi_lock = threading.Lock()
        #: At most ``max_in_flight_per_host`` attempts on the wire to one host:port at once.
        self.limiter = HostLimiter(self.config.max_in_flight_per_host)
        #: Called as ``(url, status, error, seconds)`` after every attempt (each retry too).
        self.on_attempt: Optional[Callable[[str, Optional[int], Optional[BaseException], float], None]] = None

    # -- public API -------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """An absolute URL: *url* itself, or *url* joined to ``base_url`` (see :func:`~syncworkers.http.urls.join_url`)."""
        return self.builder.url_for(url)

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
        return self.builder.build(method, url, params=params, headers=headers, json=json, data=data, timeout=timeout)

    def send(self, request: Request, *, url: Optional[str] = None,
             retry: Union[RetryConfig, RetryPolicy, bool, None] = None, cancel: Optional[threading.Event] = None,
             allow_redirects: Optional[bool] = None, limit_host: bool = True) -> Response:
        """:meth:`request` for a built *request*: the attempts, retries, breaker and host limit.

        *url* is the URL the caller asked for (before params; what errors, the breaker and
        the host limit go by), by default the request's own.
        """
        cancel = cancel or self.stop_event
        follow = self.config.follow_redirects if allow_redirects is None else allow_redirects
        call = self._attempts(request, url, retry, cancel)
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
        signal = cancel if cancel is not None else self._stop_signal()
        call = self._attempts(request, url, retry, signal)
        try:
            call.begin()
        except CircuitOpenError as exc:
            failed: "Future[Response]" = Future()
            failed.set_running_or_notify_cancel()
            failed.set_exception(exc)
            return failed
        limiter = self.limiter if limit_host and self.limiter.limit is not None else None
        return Submission(driver, call, signal, limiter, self._clock, self._log_retry).start()

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

    def _attempts(self, request: Request, url: Optional[str], retry: Union[RetryConfig, RetryPolicy, bool, None],
                  cancel: threading.Event) -> Attempts:
        """The bookkeeping of one call of *request* (*url*: what the caller asked for, by default the request's)."""
        url = request.url if url is None else url
        return Attempts(request, url, self._policy(retry), cancel, self.builder.target(url), self._attempted,
                        self.redactor)

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

    def _attempted(self, url: str, status: Optional[int], error: Optional[BaseException], sent_at: float) -> None:
        if self.on_attempt is not None:
            self.on_attempt(url, status, error, self._clock() - sent_at)

    def _log_retry(self, wait: float, reason: str, call: Attempts) -> None:
        # A webhook is named by its id (its webhook-id header), any other call by its method.
        request = call.request
        delivery_id = request.header("webhook-id")
        subject: Dict[str, Any] = {"delivery_id": delivery_id} if delivery_id else {}
        self.logger.info(("webhook {delivery_id} to {url}" if delivery_id else "{method} {url}")
                         + " failed: {error}; retry in {retry_in}s (attempt {next_attempt} of {max_attempts})",
                         **subject, method=request.method, url=safe_url(call.url), error=reason,
                         retry_in=round(wait, 3), next_attempt=call.attempt + 1,
                         max_attempts=call.policy.max_attempts if call.policy is not None else call.attempt)

    def _pause(self, wait: float, reason: str, call: Attempts, cancel: threading.Event) -> None:
        self._log_retry(wait, reason, call)
        if cancel.wait(wait):
            raise RetryInterrupted("retry wait interrupted", url=call.url, method=call.request.method,
                                   attempts=call.attempt)

    def _send(self, request: Request, follow: bool, url: str, host: str,
              cancel: Optional[threading.Event], call: Optional[Attempts] = None) -> Response:
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
                return call.trace.send(call.attempt, request, with_headers,
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
            request = self.builder.hop_request(hop, request)


def merge_headers(*layers: Optional[Mapping[str, str]]) -> MutableMapping[str, str]:
    """Case-insensitive merge, later layers winning."""
    merged: MutableMapping[str, str] = requests.structures.CaseInsensitiveDict()
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged


__all__ = ["HTTPClient", "DEFAULT_USER_AGENT", "Request", "Response", "merge_headers"]
