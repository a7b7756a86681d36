"""The SSRF guard's address rules, as a pure function of what the resolver returned (no network)."""

import pytest

from syncworkers.exceptions import ConfigError, TransportError
from syncworkers.http.netguard import ALLOW_ALL, AddressPolicy, BlockedAddressError, parse_networks

pytestmark = pytest.mark.transport_independent

GUARD = AddressPolicy(block_private=True)


def fake_resolver(table):
    def resolve(host, port):
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]
    return resolve


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.5.5.5", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd12::1",
    "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::", "198.18.0.1",
])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address):
    assert GUARD.refuses(address)
    with pytest.raises(BlockedAddressError):
        GUARD.resolve(address, 443, resolver=fake_resolver({}))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert not GUARD.refuses(address)


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "0x7f.1", "127.1", "017700000001"])
def test_every_spelling_is_checked_by_what_it_resolves_to(spelling):
    # The system resolver turns these spellings into 127.0.0.1 (inet_aton); the check is on that.
    resolver = fake_resolver({spelling: ["127.0.0.1"]})
    with pytest.raises(BlockedAddressError, match="127.0.0.1"):
        GUARD.resolve(spelling, 80, resolver=resolver)


def test_a_name_is_refused_when_any_of_its_addresses_is_blocked():
    resolver = fake_resolver({"hooks.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(BlockedAddressError):
        GUARD.resolve("hooks.example", 443, resolver=resolver)


def test_the_checked_address_is_the_one_to_connect_to():
    resolver = fake_resolver({"hooks.example": ["93.184.216.34"]})
    assert GUARD.resolve("hooks.example", 443, resolver=resolver) == "93.184.216.34"


def test_allowed_networks_open_a_hole_in_the_guard():
    policy = AddressPolicy(block_private=True, allowed=parse_networks("10.1.0.0/16, 127.0.0.1/32"))
    assert not policy.refuses("10.1.2.3") and not policy.refuses("127.0.0.1")
    assert policy.refuses("10.2.0.1") and policy.refuses("127.0.0.2")


def test_off_by_default():
    assert not ALLOW_ALL.refuses("127.0.0.1")


def test_a_name_that_does_not_resolve_is_a_transport_error_not_a_refusal():
    with pytest.raises(TransportError) as info:
        GUARD.resolve("nowhere.invalid", 80, resolver=fake_resolver({}))
    assert not isinstance(info.value, BlockedAddressError)


def test_bad_cidrs_are_a_config_error():
    with pytest.raises(ConfigError, match="not-a-net"):
        parse_networks(["10.0.0.0/8", "not-a-net"])
