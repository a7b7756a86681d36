"""The suite's two passes: requests runs every test, libcurl only those that depend on the transport.

A test that does not depend on the transport under test is marked
``transport_independent`` (itself, or its whole module with ``pytestmark``): it
builds no HTTP transport, or names its own in ``HTTPClientConfig(transport=...)``.
``--transport=curl`` deselects it. ``transport_dependent`` takes one test of a
marked module back. In the requests pass a marked test fails if it builds a
transport from the default one (:func:`default_transports_built`), so a marking
cannot silently leave a transport test out of the libcurl pass.
"""

from __future__ import annotations

import contextlib


def runs_once(item) -> bool:
    """True for a test that only the requests pass runs."""
    return (item.get_closest_marker("transport_independent") is not None
            and item.get_closest_marker("transport_dependent") is None)


@contextlib.contextmanager
def default_transports_built():
    """Collect, while inside, the config of each requests transport built without naming its transport.

    In the requests pass every transport that follows ``--transport`` is one of these.
    """
    from syncworkers.http.transport.requests_transport import RequestsTransport

    built = []
    original = RequestsTransport.__init__

    def recording_init(self, config, *args, **kwargs):
        if not config.is_set("transport"):
            built.append(config)
        original(self, config, *args, **kwargs)

    RequestsTransport.__init__ = recording_init
    try:
        yield built
    finally:
        RequestsTransport.__init__ = original
