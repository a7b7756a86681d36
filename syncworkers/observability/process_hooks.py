"""What syncworkers installs in the process, and when: once, when the first worker or Runner is built.

Importing the package changes nothing. Building a worker or a Runner calls
:func:`install`, which (once per process) puts the URL-masking filter on urllib3's
loggers (:func:`~syncworkers.observability.logging.install_urllib3_redaction`), turns
the OpenTelemetry spans on when opentelemetry-api is installed
(:func:`~syncworkers.observability.tracing.enable`) and, when prometheus_client is
installed, puts the syncworkers metrics in its default registry
(:func:`syncworkers.prometheus.install`), so an app that serves ``/metrics`` shows them.

The ``syncworkers`` logger gets no handler, not even a ``NullHandler``: in a process
whose logging nobody configured (a Django project without ``LOGGING``, plain
``gunicorn app:app``) Python's last-resort handler still prints WARNING and above to
stderr, so a dead webhook or a failing poll is never silent there.
"""

from __future__ import annotations

import importlib.util
import threading

from . import tracing
from .logging import install_urllib3_redaction

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Install the process-wide hooks above; later calls do nothing."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        install_urllib3_redaction()
        tracing.enable()
        if importlib.util.find_spec("prometheus_client") is not None:
            from . import prometheus

            prometheus.install()
        _installed = True


__all__ = ["install"]
