"""OpenTelemetry spans for HTTP attempts, and the trace context a webhook keeps until it is sent.

With opentelemetry-api installed (``pip install 'syncworkers[otel]'``) and the
application's ``TracerProvider`` set, each attempt of a request — a webhook delivery
attempt, a poll request, each retry — is a CLIENT span with the HTTP semantic-convention
attributes (``http.request.method``, ``url.full`` masked, ``server.address``,
``server.port``, ``http.response.status_code``, ``error.type``,
``http.request.resend_count``), and the request carries that span's context on the wire
(W3C ``traceparent``, through the application's propagators).

An attempt's parent is the trace context the call's own headers carry (``traceparent``),
else the caller's current span. That is how an outbox delivery continues the trace of
the request that enqueued it, in whatever process and however much later: ``enqueue()``
stores :func:`carrier` with the delivery, and each attempt sends it as the call's
``traceparent``. A broadcast hands its caller's context to its pool threads the same way
(:func:`with_current`).

Importing this module imports no opentelemetry: :func:`enable` does, once, when the
first worker or Runner is built (:mod:`~syncworkers.observability.process_hooks`).
Until then, and for good without opentelemetry, :data:`enabled` is False and the
client's per-request check is one attribute read.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

from ..version import __version__
from .redaction import Redactor, safe_url

#: True once opentelemetry is imported and spans are made (see :func:`enable`).
enabled = False
#: The W3C headers a stored trace context is made of (what :func:`carrier` returns).
TRACE_HEADERS = ("traceparent", "tracestate")
#: Methods the semantic conventions name; any other is reported as ``_OTHER``.
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_lock = threading.Lock()
_otel: Any = None  # the opentelemetry modules and objects we use, once imported (see _Otel)

R = TypeVar("R")
Q = TypeVar("Q")


class _Otel:
    """What is used of opentelemetry, imported once."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.context = context
        self.propagate = propagate
        self.trace = trace
        self.w3c = TraceContextTextMapPropagator()
        self.client = trace.SpanKind.CLIENT
        self.error = trace.Status(trace.StatusCode.ERROR)
        #: A proxy until the application sets its TracerProvider, then that provider's tracer.
        self.tracer = trace.get_tracer("syncworkers", __version__)


def enable() -> bool:
    """Import opentelemetry and make spans from now on (idempotent); False when it is not installed."""
    global enabled, _otel
    if _otel is None:
        with _lock:
            if _otel is None:
                try:
                    _otel = _Otel()
                except ImportError:
                    return False
                enabled = True
    return enabled


def carrier() -> Optional[Dict[str, str]]:
    """The current span's context as W3C headers (``traceparent``, ``tracestate``), or None without one.

    What ``enqueue()`` stores with a delivery, so that its attempts continue this trace.
    """
    otel = _otel
    if otel is None:
        return None
    current = otel.context.get_current()
    if not otel.trace.get_current_span(current).get_span_context().is_valid:
        return None
    found: Dict[str, str] = {}
    otel.w3c.inject(found, context=current)
    return found or None


def with_current(headers: Dict[str, str]) -> Dict[str, str]:
    """*headers* with the current span's ``traceparent`` added (unless they carry one): for calls made
    on other threads (a broadcast's pool), whose attempts are then children of the caller's span."""
    if not enabled or any(name.lower() == "traceparent" for name in headers):
        return headers
    found = carrier()
    return {**found, **headers} if found else headers


def begin(method: str, url: str, headers: Iterable[Tuple[str, Any]], redactor: Redactor) -> "Call":
    """The trace of one client call (its *headers* as name/value pairs): its parent, and what every
    attempt's span says of the request."""
    otel = _otel
    parent = otel.context.get_current()
    given = {name.lower(): value for name, value in headers
             if name.lower() in TRACE_HEADERS and isinstance(value, str)}
    if "traceparent" in given:
        parent = otel.w3c.extract(given, context=parent)
    return Call(otel, parent, method, url, redactor)


class Call:
    """The spans of one call's attempts (made by :func:`begin`)."""

    __slots__ = ("_otel", "_parent", "_method", "_url", "_redactor")

    def __init__(self, otel: Any, parent: Any, method: str, url: str, redactor: Redactor) -> None:
        self._otel = otel
        self._parent = parent
        self._method = method.upper()
        self._url = url
        self._redactor = redactor

    def attributes(self) -> Dict[str, Any]:
        """What the semantic conventions say of the request: its method, URL (masked) and server."""
        method = self._method
        known = method in KNOWN_METHODS
        attributes: Dict[str, Any] = {"http.request.method": method if known else "_OTHER",
                                      "url.full": self._redactor.text(safe_url(self._url) or "")}
        if not known:
            attributes["http.request.method_original"] = method
        try:
            parts = urlsplit(self._url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return attributes
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        if port is not None:
            attributes["server.port"] = port
        return attributes

    def start(self, attempt: int) -> Optional["Attempt"]:
        """Start attempt number *attempt*'s CLIENT span; None when there is nothing to record or propagate
        (the API without an SDK, and no parent)."""
        otel = self._otel
        name = self._method if self._method in KNOWN_METHODS else "HTTP"
        span = otel.tracer.start_span(name, context=self._parent, kind=otel.client)
        recording = span.is_recording()
        if recording:  # without an SDK nothing records: the attributes are not worth working out
            span.set_attributes(self.attributes())
            if attempt > 1:
                span.set_attribute("http.request.resend_count", attempt - 1)
        if not span.get_span_context().is_valid:
            return None
        return Attempt(otel, span, recording, otel.trace.set_span_in_context(span, self._parent))

    def send(self, attempt: int, request: Q, with_headers: Callable[[Q, Dict[str, str]], Q],
             send: Callable[[Q], R]) -> R:
        """Make attempt number *attempt* a span: *send* gets *request* with the span's context in its headers
        (*with_headers* adds them to a copy) and runs with the span current; its answer or error ends the span."""
        span = self.start(attempt)
        if span is None:
            return send(request)
        token = self._otel.context.attach(span.context)  # an instrumented transport's spans become our children
        try:
            response = send(with_headers(request, span.wire) if span.wire else request)
        except BaseException as exc:
            span.ended(None, exc)
            raise
        else:
            span.ended(response, None)
            return response
        finally:
            self._otel.context.detach(token)


class Attempt:
    """One attempt's span: the headers that carry it on the wire (``wire``), ended by :meth:`ended`."""

    __slots__ = ("_otel", "_span", "_recording", "context", "wire")

    def __init__(self, otel: Any, span: Any, recording: bool, context: Any) -> None:
        self._otel = otel
        self._span = span
        self._recording = recording
        self.context = context
        self.wire: Dict[str, str] = {}
        otel.propagate.inject(self.wire, context=context)

    def ended(self, response: Any, error: Optional[BaseException]) -> None:
        """The attempt got *response* (its status is the span's) or raised *error*; the span ends."""
        span = self._span
        if self._recording:
            status = getattr(response, "status_code", None) if error is None else getattr(error, "status", None)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(self._otel.error)
            elif status is not None and status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(self._otel.error)
        span.end()


__all__ = ["Attempt", "Call", "KNOWN_METHODS", "TRACE_HEADERS", "begin", "carrier", "enable", "enabled", "with_current"]
