"""Django integration (``pip install 'syncworkers[django]'``).

``INSTALLED_APPS += ["syncworkers.contrib.django"]`` and a ``SYNCWORKERS`` setting
(WORKERS, MAX_WORKERS, OUTBOX, COORDINATION, BASE_URL, SIGNING_SECRET). When OUTBOX
names a ``DATABASES`` alias the outbox tables live in that database (``manage.py
migrate`` creates them, the admin shows them) and the app's side of the outbox runs
on Django's connections (:mod:`.outbox`): :func:`enqueue` writes inside the current
transaction, and a test reads back what it enqueued. Workers run with ``python
manage.py syncworkers run``, or, with AUTOSTART, start with each serving process
(:mod:`.apps`); never in another management command.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any, Callable, Mapping, Optional, Tuple, TypeVar, cast

from ...signing import DEFAULT_TOLERANCE, check_tolerance

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_current: Optional[Tuple[Any, Any]] = None  # (Settings, AppWorkers) of this process


def app_workers() -> Any:
    """This process's :class:`~syncworkers.contrib.process.AppWorkers` for the SYNCWORKERS setting.

    Built on first use, and again when the setting changed (``override_settings`` in tests).
    """
    global _current
    from ..process import AppWorkers
    from .conf import get_settings

    settings = get_settings()
    with _lock:
        if _current is not None and _current[0] == settings:
            return _current[1]
        state = AppWorkers(settings, name="django", around=connections_closed, outbox=_outbox_maker())
        old, _current = _current, (settings, state)
    if old is not None:
        old[1].stop(timeout=10)
    return _current[1]


def _outbox_maker() -> Optional[Callable[[], Any]]:
    """What makes the sender's store when OUTBOX names a database: one on Django's connections."""
    from .conf import database_location, outbox_alias
    from .outbox import DjangoOutbox

    alias = outbox_alias()
    if alias is None:
        return None
    return lambda: DjangoOutbox(alias, lambda: database_location(alias))


def release_outbox() -> None:
    """Close what this process's outbox opened to deliver, unless its workers run (after a command:
    ``call_command("syncworkers", "run", "--once")`` in a test leaves no connection behind)."""
    current = _current
    if current is not None and not current[1].running:
        current[1].stop()


def sender() -> Any:
    """This process's WebhookSenderWorker (BASE_URL, SIGNING_SECRET, OUTBOX)."""
    return app_workers().sender


def enqueue(endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None, *,
            delivery_id: Optional[str] = None) -> str:
    """Store a webhook for delivery and return its id.

    When OUTBOX names a database, the delivery is written on Django's connection
    to it, inside the current transaction: if the ``transaction.atomic()`` block
    rolls back it is never sent; once it commits, the running sender
    (``manage.py syncworkers run``) delivers it. Otherwise it goes to the OUTBOX
    file or URL at once.
    """
    return cast(str, sender().enqueue(endpoint, data, headers, delivery_id=delivery_id))


class connections_closed:
    """Around each job: close database connections that are unusable or past CONN_MAX_AGE, as
    Django does at the start and end of every request (``close_old_connections``)."""

    def __enter__(self) -> None:
        from django.db import close_old_connections  # type: ignore[import-untyped]

        close_old_connections()

    def __exit__(self, *exc: Any) -> None:
        from django.db import close_old_connections

        close_old_connections()


def webhook_receiver(secret: Any, tolerance: int = DEFAULT_TOLERANCE) -> Callable[[F], F]:
    """A csrf-exempt view that verifies the Standard Webhooks signature, then runs with ``payload=``.

    The view is called as ``view(request, *args, payload=..., **kwargs)``; a bad
    or missing signature, a stale timestamp or a body that is not JSON gets
    ``400`` with a short reason instead. *secret*: one ``whsec_`` secret, several,
    or a callable returning them (read at each request).
    """
    from django.http import HttpResponseBadRequest  # type: ignore[import-untyped]
    from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

    from ...exceptions import SignatureError
    from ...signing import verify

    check_tolerance(tolerance)  # a bad one is the app's error, now: not a 500 at every request

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            body = request.body
            keys = secret() if callable(secret) else secret
            try:
                verify(body, dict(request.headers), keys, tolerance=tolerance)
            except SignatureError as exc:
                return HttpResponseBadRequest(f"invalid webhook signature: {exc}\n", content_type="text/plain")
            try:
                payload = json.loads(body)
            except ValueError:
                return HttpResponseBadRequest("webhook body is not JSON\n", content_type="text/plain")
            return view(request, *args, payload=payload, **kwargs)

        return cast(F, csrf_exempt(wrapper))

    return decorate


__all__ = ["app_workers", "enqueue", "release_outbox", "sender", "webhook_receiver"]
