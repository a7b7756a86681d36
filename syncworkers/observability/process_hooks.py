"""What syncworkers installs in the process, and when: once, when the first worker or Runner is built.

Importing the package changes nothing. Building a worker or a Runner calls
:func:`install`, which (once per process) gives the ``syncworkers`` logger a
``NullHandler`` (as libraries do: the application decides where logs go), puts the
URL-masking filter on urllib3's loggers
(:func:`~syncworkers.observability.logging.install_urllib3_redaction`) and, when
prometheus_client is installed, puts the syncworkers metrics in its default registry
(:func:`syncworkers.prometheus.install`), so an app that serves ``/metrics`` shows them.
"""

from __future__ import annotations

import importlib.util
import logging
import threading

from .logging import ROOT_LOGGER, install_urllib3_redaction

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
        logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())
        install_urllib3_redaction()
        if importlib.util.find_spec("prometheus_client") is not None:
            from . import prometheus

            prometheus.install()
        _installed = True


__all__ = ["install"]
