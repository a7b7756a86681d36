"""Flask integration (``pip install 'syncworkers[flask]'``).

::

    sw = SyncWorkers(app)            # or: sw = SyncWorkers(); sw.init_app(app)

    @app.post("/orders")
    def create_order():
        sw.sender.enqueue("/hooks/orders", {"id": 1})
        return {"ok": True}

Settings (``app.config``): ``SYNCWORKERS_WORKERS``, ``SYNCWORKERS_MAX_WORKERS``,
``SYNCWORKERS_OUTBOX_URL``, ``SYNCWORKERS_COORDINATION_URL``, ``SYNCWORKERS_BASE_URL``,
``SYNCWORKERS_SIGNING_SECRET``, ``SYNCWORKERS_AUTOSTART`` (False), checked by
``init_app``. With AUTOSTART the workers start with each process that serves
the app — when gunicorn's worker or ``flask run`` builds it, with no request
needed; never in the reloader's watcher, gunicorn's master or another ``flask``
command — and stop at exit. Otherwise run them with ``flask syncworkers run``.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Dict, Optional, TypeVar, cast

import click
from flask import Flask, Response, current_app, request
from flask.cli import with_appcontext

from ..exceptions import SignatureError
from ..signing import DEFAULT_TOLERANCE, check_tolerance, verify
from . import commands
from .process import AppWorkers
from .serving import role
from .settings import Settings

EXTENSION = "syncworkers"
#: What the app.config keys start with, and the two whose names say they hold a URL.
PREFIX = "SYNCWORKERS_"
NAMES = {"OUTBOX": "SYNCWORKERS_OUTBOX_URL", "COORDINATION": "SYNCWORKERS_COORDINATION_URL"}
#: app.config keys and their defaults.
DEFAULTS: Dict[str, Any] = {
    "SYNCWORKERS_WORKERS": (),
    "SYNCWORKERS_MAX_WORKERS": None,
    "SYNCWORKERS_OUTBOX_URL": None,
    "SYNCWORKERS_COORDINATION_URL": None,
    "SYNCWORKERS_BASE_URL": None,
    "SYNCWORKERS_SIGNING_SECRET": None,
    "SYNCWORKERS_AUTOSTART": False,
}

F = TypeVar("F", bound=Callable[..., Any])


def settings_of(app: Flask) -> Settings:
    """The SYNCWORKERS_* settings of *app*, checked: :class:`~.settings.SettingsError` names each problem."""
    return Settings.from_mapping(app.config, PREFIX, NAMES)


class SyncWorkers:
    """The extension: the app's sender, its workers, and the ``flask syncworkers`` commands."""

    def __init__(self, app: Optional[Flask] = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the settings, keep the app's state in ``app.extensions["syncworkers"]``, add the commands.

        Raises :class:`~.settings.SettingsError` (a ConfigError) naming each bad setting and its fix.
        With ``SYNCWORKERS_AUTOSTART`` the workers start now if this process serves the app (see
        :mod:`.serving`; call it once the extensions the jobs use are set up), in each worker a
        preloading master forks, and otherwise on the first request a process serves.
        """
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = settings_of(app)
        state = AppWorkers(settings, name=app.name, around=app.app_context)
        app.extensions[EXTENSION] = state
        app.cli.add_command(make_group(app))
        if settings.autostart:

            def start_workers() -> None:  # returns None: the request goes on
                state.ensure_started()

            app.before_request(start_workers)  # under a server serving.role() does not know
            state.boot(role())

    def state(self, app: Optional[Flask] = None) -> AppWorkers:
        """The :class:`AppWorkers` of *app* (default: the app given to the constructor, else current_app)."""
        target = app or self.app or cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        try:
            return cast(AppWorkers, target.extensions[EXTENSION])
        except KeyError:
            raise RuntimeError(f"SyncWorkers.init_app() was not called for app {target.name!r}") from None

    @property
    def sender(self) -> Any:
        """This process's WebhookSenderWorker for the app: ``sw.sender.enqueue(endpoint, data)``."""
        return self.state().sender

    def start(self, app: Optional[Flask] = None) -> bool:
        """Start the app's workers in this process now (what AUTOSTART does on the first request)."""
        return self.state(app).ensure_started()

    def stop(self, timeout: Optional[float] = None, app: Optional[Flask] = None) -> bool:
        """Stop the app's workers in this process (also done at exit)."""
        return self.state(app).stop(timeout)


def make_group(app: Flask) -> click.Group:
    """``flask syncworkers run|check|outbox``: the ``syncworkers`` commands inside the app context."""
    return commands.make_group(lambda: cast(AppWorkers, current_app.extensions[EXTENSION]),
                               around=app.app_context, outbox=lambda: app.config["SYNCWORKERS_OUTBOX_URL"],
                               decorate=with_appcontext)


def webhook_receiver(secret: Any, tolerance: int = DEFAULT_TOLERANCE) -> Callable[[F], F]:
    """Verify the Standard Webhooks signature of the request, then call the view with ``payload=``.

    A bad or missing signature, a stale timestamp or a body that is not JSON is
    answered ``400`` with a short reason; the view is not called. *secret* is
    one ``whsec_`` secret, several (rotation), or a callable returning them.
    """

    check_tolerance(tolerance)  # a bad one is the app's error, now: not a 500 at every request

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            body = request.get_data(cache=True)
            keys = secret() if callable(secret) else secret
            try:
                verify(body, dict(request.headers), keys, tolerance=tolerance)
            except SignatureError as exc:
                return _bad_request(f"invalid webhook signature: {exc}")
            try:
                payload = json.loads(body)
            except ValueError:
                return _bad_request("webhook body is not JSON")
            return view(*args, payload=payload, **kwargs)

        return cast(F, wrapper)

    return decorate


def _bad_request(reason: str) -> Response:
    return Response(reason + "\n", status=400, mimetype="text/plain")


__all__ = ["DEFAULTS", "NAMES", "PREFIX", "SyncWorkers", "settings_of", "webhook_receiver"]
