"""urllib3 connections that connect only to an address the SSRF guard checked.

The host is resolved once by :meth:`~syncworkers.http.netguard.AddressPolicy.resolve`
and the socket goes to that very address, so a second DNS answer cannot swap it;
the ``Host`` header, SNI and the certificate check keep the hostname. A refused
address raises :class:`~syncworkers.http.netguard.BlockedAddressError` before any
packet leaves.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Type

from urllib3.connection import HTTPConnection, HTTPSConnection

from ..netguard import AddressPolicy


class _PinnedMixin:
    """Resolves through the class's ``policy``, then connects to the checked address."""

    policy: AddressPolicy
    _dns_host: str
    port: int

    def _new_conn(self) -> socket.socket:
        host = self._dns_host
        checked = self.policy.resolve(host, self.port)
        # urllib3 connects to _dns_host; everything else (Host, SNI, certificate) reads .host afterwards.
        self._dns_host = checked
        try:
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = host
        return sock


class PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    pass


class PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    pass


def pinned_connection_classes(policy: AddressPolicy) -> Dict[str, Type[Any]]:
    """Connection classes (by scheme) bound to *policy*, for a pool's ``ConnectionCls``."""
    return {
        "http": type("GuardedHTTPConnection", (PinnedHTTPConnection,), {"policy": policy}),
        "https": type("GuardedHTTPSConnection", (PinnedHTTPSConnection,), {"policy": policy}),
    }


__all__ = ["PinnedHTTPConnection", "PinnedHTTPSConnection", "pinned_connection_classes"]
