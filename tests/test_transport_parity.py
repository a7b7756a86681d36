"""One table of hostile inputs, run over both transports: each ends in the same exception class.

libcurl and requests differ underneath (their own resolvers, URL parsers, header handling and
decoders); what a caller sees must not. Every case runs over ``requests`` and ``curl`` in
the same test and must raise the same class of syncworkers' own (a ValueError for a caller's
header), with the same text where the cause is ours, and send nothing where it says so.
Only 127.0.0.1 is ever contacted.
"""

import gzip

import pytest

from syncworkers import (
    BlockedAddressError,
    ConfigError,
    HTTPClient,
    HTTPClientConfig,
    RequestError,
    ResponseTooLarge,
    SyncWorkersError,
)
from syncworkers.http.redirects import RedirectRefused

from .hostile import HostileReceiver

TRANSPORTS = ("requests", "curl")
CAP = 1024 * 1024


def guarded(transport, **kw):
    return HTTPClient(HTTPClientConfig(transport=transport, max_retries=0, block_private_networks=True, **kw))


def plain(transport, **kw):
    return HTTPClient(HTTPClientConfig(transport=transport, max_retries=0, **kw))


def get(client_of, target, **kw):
    """A case: GET *target* (``{port}``: the loopback server's) with a client made by *client_of*."""
    def run(transport, server):
        with client_of(transport) as client:
            client.get(target.format(port=server.port), **kw)
    return run


def redirect_to(location):
    """A case: the loopback server (allowed through the guard) redirects to *location*."""
    def run(transport, server):
        server.route("GET", "/start", status=302, headers={"Location": location.format(port=server.port)})
        with guarded(transport, allowed_networks=["127.0.0.1/32"]) as client:
            client.get(server.url("/start"))
    return run


def answer(raw):
    """A case: a raw receiver answers *raw* to a GET."""
    def run(transport, server):
        def behaviour():
            yield raw, 0
        with HostileReceiver(behaviour) as receiver, plain(transport, max_response_size=CAP) as client:
            client.get(receiver.url("/x"))
    return run


BOMB = gzip.compress(b"\0" * (4 * CAP))  # 4 MiB of zeros in a few KiB
#: case -> (what runs it, the class both transports must raise, whether the loopback server stays untouched)
CASES = {
    # the SSRF guard: every spelling of the loopback is refused before a packet leaves
    "guard: localhost. (a root dot)": (get(guarded, "http://localhost.:{port}/"), BlockedAddressError, True),
    "guard: 127.0.0.1. (a root dot)": (get(guarded, "http://127.0.0.1.:{port}/"), BlockedAddressError, True),
    "guard: LOCALHOST.": (get(guarded, "http://LOCALHOST.:{port}/"), BlockedAddressError, True),
    "guard: 127。0。0。1 (ideographic dots)": (get(guarded, "http://127。0。0。1:{port}/"), BlockedAddressError, True),
    "guard: ①②⑦.0.0.1 (circled digits)": (get(guarded, "http://①②⑦.0.0.1:{port}/"), BlockedAddressError, True),
    "guard: ｌｏｃａｌｈｏｓｔ (fullwidth)": (get(guarded, "http://ｌｏｃａｌｈｏｓｔ:{port}/"), BlockedAddressError, True),
    "guard: %31%32%37.0.0.1 (escaped)": (get(guarded, "http://%31%32%37.0.0.1:{port}/"), BlockedAddressError, True),
    "guard: 0x7f.1": (get(guarded, "http://0x7f.1:{port}/"), BlockedAddressError, True),
    "guard: [::1]": (get(guarded, "http://[::1]:{port}/"), BlockedAddressError, True),
    "guard: [::ffff:127.0.0.1]": (get(guarded, "http://[::ffff:127.0.0.1]:{port}/"), BlockedAddressError, True),
    # hosts no transport can send to: the URL rule refuses them before either transport sees them
    "url: localhost.. (two root dots)": (get(guarded, "http://localhost..:{port}/"), ConfigError, True),
    "url: a..localhost (an empty label)": (get(plain, "http://a..localhost:{port}/"), ConfigError, True),
    "url: .localhost": (get(plain, "http://.localhost:{port}/"), ConfigError, True),
    "url: *.localhost": (get(plain, "http://*.localhost:{port}/"), ConfigError, True),
    "url: [::1]. (junk after the brackets)": (get(plain, "http://[::1].:{port}/"), ConfigError, True),
    "url: 127.0.0.1%00": (get(plain, "http://127.0.0.1%00:{port}/"), ConfigError, True),
    "url: [fe80::1%25lo] (an IPv6 zone)": (get(plain, "http://[fe80::1%25lo]:{port}/"), ConfigError, True),
    "url: an emoji label": (get(plain, "http://😀.localhost:{port}/"), ConfigError, True),
    "url: a 64-character label": (get(plain, "http://" + "a" * 64 + ".localhost:{port}/"), ConfigError, True),
    "url: a non-numeric port": (get(plain, "http://127.0.0.1:８０/"), ConfigError, True),
    # a caller's framing: refused before anything is built
    "header: Transfer-Encoding": (get(plain, "http://127.0.0.1:{port}/", headers={"Transfer-Encoding": "chunked"}),
                                  ValueError, True),
    "header: Content-Length": (get(plain, "http://127.0.0.1:{port}/", headers={"Content-Length": "0"}), ValueError,
                               True),
    "header: Host": (get(plain, "http://127.0.0.1:{port}/", headers={"Host": "evil.example"}), ValueError, True),
    # redirects: the next hop is held to the URL rule and the guard alike
    "redirect: to 127.0.0.2. (a root dot)": (redirect_to("http://127.0.0.2.:{port}/"), BlockedAddressError, False),
    "redirect: to an escaped 127.0.0.2": (redirect_to("http://%31%32%37.0.0.2:{port}/"), BlockedAddressError, False),
    "redirect: to [::1]": (redirect_to("http://[::1]:{port}/"), BlockedAddressError, False),
    "redirect: to localhost..": (redirect_to("http://localhost..:{port}/"), RedirectRefused, False),
    "redirect: to an empty label": (redirect_to("http://a..b.invalid/"), RedirectRefused, False),
    # answers
    "answer: a gzip bomb": (answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                                   % (len(BOMB), BOMB)), ResponseTooLarge, True),
    "answer: a gzip bomb, chunked": (answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: "
                                            b"chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BOMB), BOMB)),
                                     ResponseTooLarge, True),
}


def raised(case, transport, server):
    try:
        CASES[case][0](transport, server)
    except Exception as exc:  # noqa: BLE001 - what each transport raises is the point
        return exc
    return None


@pytest.mark.parametrize("case", list(CASES))
def test_both_transports_raise_the_same_error_for_a_hostile_input(case, server):
    _, expected, untouched = CASES[case]
    errors = {transport: raised(case, transport, server) for transport in TRANSPORTS}
    kinds = {transport: type(exc) for transport, exc in errors.items()}
    assert kinds == {transport: expected for transport in TRANSPORTS}, errors
    texts = {transport: exc.args[0] for transport, exc in errors.items()}  # (without the URL's context)
    assert texts["requests"] == texts["curl"], texts  # the cause is ours, so is the wording
    for exc in errors.values():
        assert isinstance(exc, SyncWorkersError) or expected is ValueError
        if isinstance(exc, RequestError) and expected is not RedirectRefused:
            assert exc.attempts == (1 if expected is ResponseTooLarge else 0), exc  # 0: nothing was sent
    if untouched:
        assert server.connections == 0 and server.requests == []


def test_a_gzip_bomb_reports_the_cap_it_exceeded_not_the_compressed_size(server):
    errors = {transport: raised("answer: a gzip bomb", transport, server) for transport in TRANSPORTS}
    for exc in errors.values():
        assert str(exc).startswith(f"response body exceeds {CAP} bytes"), exc
        assert str(len(BOMB)) not in str(exc)
