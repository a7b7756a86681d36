"""The SSRF guard: which resolved addresses a request may connect to.

When a sender delivers to URLs its users supplied, a hostile URL can point at
the machine's own services (``127.0.0.1``, ``169.254.169.254`` cloud metadata,
the private network). :class:`AddressPolicy` resolves a host once, refuses it
when an address it resolved to is in a blocked range (unless explicitly
allowed), and returns the checked address — the transport connects to that very
address, so a second DNS answer cannot swap it (DNS rebinding). Every spelling
of an address (decimal ``2130706433``, hex ``0x7f.1``, short ``127.1``,
IPv4-mapped ``::ffff:127.0.0.1``) is caught because the check is on what the
resolver returned, not on the text of the URL.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Callable, List, Tuple, Union

from ..exceptions import BlockedAddressError, TransportError
from ..config.validators import Network, parse_networks

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
#: ``getaddrinfo``-like: (host, port) -> list of address strings.
Resolver = Callable[[str, int], List[str]]

#: Ranges refused when ``block_private_networks`` is on (RFC 6890 special-purpose and friends).
BLOCKED_NETWORKS: Tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",  # "this network", unspecified
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local: cloud metadata lives here
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved
    "255.255.255.255/32",  # broadcast
    "::/128", "::1/128",  # unspecified, loopback
    "64:ff9b::/96", "64:ff9b:1::/48",  # NAT64: an IPv4 address in disguise
    "100::/64",  # discard
    "2001::/23",  # IETF protocol assignments (Teredo among them)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4: an IPv4 address in disguise
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
))


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped (``::ffff:a.b.c.d``) or -compatible (``::a.b.c.d``) one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        packed = int(address)
        if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d (deprecated "compatible" form)
            return ipaddress.IPv4Address(packed)
    return address


def _system_resolver(host: str, port: int) -> List[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses requests may connect to; ``block_private`` off allows everything."""

    block_private: bool = False
    allowed: Tuple[Network, ...] = ()

    @classmethod
    def of(cls, config: Any) -> "AddressPolicy":
        """The policy of an HTTPClientConfig (``block_private_networks``, ``allowed_networks``)."""
        return cls(bool(config.block_private_networks), tuple(config.allowed_networks))

    def refuses(self, address: Union[str, IPAddress]) -> bool:
        """True when connecting to *address* is not allowed."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if not self.block_private:
            return False
        candidates = {ip, embedded_ipv4(ip)}
        if any(c in net for c in candidates for net in self.allowed if c.version == net.version):
            return False
        return any(c in net for c in candidates for net in BLOCKED_NETWORKS if c.version == net.version)

    def resolve(self, host: str, port: int, resolver: Resolver = _system_resolver) -> str:
        """The address to connect to for *host*: resolved once and checked; BlockedAddressError if refused.

        Every address the name resolves to must be allowed (a name that also points
        inside the network is refused), so which one a later lookup would return
        does not matter. A name's trailing dot (the DNS root: ``localhost.``) is dropped first, as
        requests drops it: every transport then checks the same name (libcurl's own resolver
        would otherwise answer for ``localhost.`` where the system's does not).
        """
        host = host.strip("[]").rstrip(".")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = resolver(host, port)
            except (OSError, UnicodeError) as exc:  # UnicodeError: a label the resolver cannot encode
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise TransportError(f"cannot resolve {host!r}: {reason}") from None
        if not addresses:
            raise TransportError(f"cannot resolve {host!r}: no address")
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if self.refuses(ip):
                raise BlockedAddressError(
                    f"refused: {host!r} resolves to {ip}, a private, loopback, link-local or reserved "
                    "address (block_private_networks is on; allow it with allowed_networks)")
        return addresses[0]


#: The policy that allows every address (the default: internal services keep working).
ALLOW_ALL = AddressPolicy()

__all__ = [
    "ALLOW_ALL",
    "AddressPolicy",
    "BLOCKED_NETWORKS",
    "BlockedAddressError",
    "embedded_ipv4",
    "parse_networks",
]
