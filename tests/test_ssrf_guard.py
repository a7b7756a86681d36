"""The SSRF guard wired into both transports: refused destinations never see a packet.

Only 127.0.0.1/localhost are ever real destinations. Addresses such as
169.254.169.254 or 10.x appear only as refused ones: the socket layer is
patched so that a connection attempt fails the test loudly (requests), and a
listening loopback socket records any connection libcurl would make.
"""

import socket

import pytest

from syncworkers import HTTPClientConfig, WebhookConfig, WebhookSenderWorker
from syncworkers.http.client import HTTPClient
from syncworkers.http.netguard import BlockedAddressError
from syncworkers.outbox import DEAD
from syncworkers.http.outcome import Kind, classify_error

from .helpers import LogCapture, trap_packets

pytestmark = pytest.mark.transport_independent  # each test names its transport

TRANSPORTS = ["requests", "curl"]
LOOPBACK_SPELLINGS = ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1", "0177.0.0.1",
                      "[::ffff:127.0.0.1]", "[::1]",
                      # a root dot, Unicode that UTS-46 maps to ASCII, percent-escapes: the guard sees the host
                      "localhost.", "LOCALHOST.", "127.0.0.1.", "127。0。0。1", "①②⑦.0.0.1", "１２７.0.0.1",
                      "ｌｏｃａｌｈｏｓｔ", "%31%32%37.0.0.1"]
NEVER_CONNECTED = ["169.254.169.254", "10.0.0.1", "192.168.1.1", "100.64.0.1", "[::ffff:169.254.169.254]",
                   "0.0.0.0", "[fd00::1]"]


@pytest.fixture
def no_packets(monkeypatch):
    """Any connection attempt from Python's socket layer (but to allowed loopback ports) fails the test."""
    return trap_packets(monkeypatch)


def guarded(transport, **kw):
    kw.setdefault("max_retries", 0)
    return HTTPClient(HTTPClientConfig(transport=transport, block_private_networks=True, **kw))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_before_connecting(transport, host, server):
    server.route("GET", "/secret", body=b"internal")
    with guarded(transport) as client:
        with pytest.raises(BlockedAddressError, match="refused"):
            client.get(f"http://{host}:{server.port}/secret")
    assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + NEVER_CONNECTED)
def test_no_socket_is_ever_connected_for_a_refused_address(host, no_packets):
    with guarded("requests") as client:
        with pytest.raises(BlockedAddressError):
            client.get(f"http://{host}/latest/meta-data/")
    assert list(no_packets) == []


@pytest.mark.parametrize("host", NEVER_CONNECTED)
def test_curl_refuses_metadata_and_private_addresses_before_the_transfer(host):
    with guarded("curl", connect_timeout=30, deadline=30) as client:
        with pytest.raises(BlockedAddressError, match="refused") as caught:
            client.get(f"http://{host}/latest/meta-data/")
    assert caught.value.attempts == 0  # nothing went out: not even a connection attempt counted


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_allowed_networks_let_a_loopback_receiver_through(transport, server):
    server.route("GET", "/ok", json={"ok": True})
    with guarded(transport, allowed_networks=["127.0.0.0/8"]) as client:
        assert client.get(server.url("/ok")).json() == {"ok": True}
        assert client.get(f"http://localhost:{server.port}/ok").json() == {"ok": True}
    with guarded(transport, allowed_networks="10.0.0.0/8") as client:  # another hole: still refused
        with pytest.raises(BlockedAddressError):
            client.get(server.url("/ok"))
    assert len(server.calls("/ok")) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_off_by_default(transport, server):
    server.route("GET", "/ok", body=b"ok")
    with HTTPClient(HTTPClientConfig(transport=transport)) as client:
        assert client.get(server.url("/ok")).status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_connection_goes_to_the_checked_address_not_a_second_dns_answer(transport, server, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address once, to a refused one afterwards."""
    real = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.invalid":
            answers.append(host)
            address = "127.0.0.1" if len(answers) == 1 else "10.255.255.1"
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    server.route("GET", "/ok", body=b"ok")
    with guarded(transport, allowed_networks=["127.0.0.1/32"]) as client:
        response = client.get(f"http://rebind.invalid:{server.port}/ok")
    assert response.status_code == 200 and answers == ["rebind.invalid"]
    assert server.calls("/ok")[0].header("Host") == f"rebind.invalid:{server.port}"  # the name is kept


def test_curl_checks_every_socket_it_opens(server, monkeypatch):
    """Behind the check before the transfer, libcurl's own socket opening refuses a blocked address."""
    from syncworkers.http.transport.curl import CurlTransport

    monkeypatch.setattr(CurlTransport, "_pin", lambda self, c, target, url, method: None)
    with guarded("curl") as client:
        with pytest.raises(BlockedAddressError, match="127.0.0.1"):
            client.get(server.url("/x"))
    assert server.connections == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/admin",
                                    "http://2130706434/"])  # 127.0.0.2
def test_a_redirect_to_a_refused_address_is_refused(transport, target, server, no_packets):
    no_packets.ports.add(server.port)
    server.route("GET", "/start", status=302, headers={"Location": target})
    with guarded(transport, allowed_networks=["127.0.0.1/32"]) as client:
        with pytest.raises(BlockedAddressError):
            client.get(server.url("/start").replace("127.0.0.1", "localhost"))
    assert len(server.calls("/start")) == 1 and list(no_packets) == []


def test_a_refusal_is_final_and_sends_nothing():
    outcome = classify_error(BlockedAddressError("refused"))
    assert outcome.kind is Kind.INVALID and outcome.final and not outcome.sent and not outcome.host_failure


# -- webhooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_send_webhook_to_a_metadata_address_is_false_with_the_reason(transport, server):
    config = WebhookConfig(block_private_networks=True, max_retries=3, retry_delay=0)
    with WebhookSenderWorker(webhook_config=config, http_config=HTTPClientConfig(transport=transport)) as worker:
        with LogCapture() as logs:
            assert worker.send_webhook(f"http://127.1:{server.port}/hook", {"a": 1}) is False
        result = worker.deliver("http://169.254.169.254/latest/meta-data/", {"a": 1})
    assert not result.ok and result.attempts == 0 and "refused" in result.error
    assert "169.254.169.254" in result.error
    assert "refused" in logs.text and " not delivered: " in logs.text
    assert server.connections == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_outbox_marks_a_refused_delivery_dead_at_once(transport, server):
    server.route("POST", "/hook", status=200)
    config = WebhookConfig(block_private_networks=True, allowed_networks=["127.0.0.1/32"],
                           retry_schedule=(0.01, 0.01, 0.01))
    with WebhookSenderWorker(webhook_config=config, http_config=HTTPClientConfig(transport=transport)) as worker:
        refused = worker.enqueue("http://169.254.169.254/hook", {"a": 1})
        local = worker.enqueue(f"http://[::ffff:127.0.0.2]:{server.port}/hook", {"a": 1})
        allowed = worker.enqueue(server.url("/hook"), {"a": 2})
        assert worker.flush(20)
        got = {name: worker.outbox.get(id) for name, id in
               (("refused", refused), ("local", local), ("allowed", allowed))}
    for name in ("refused", "local"):
        assert got[name].state == DEAD and got[name].attempts == 1
        assert got[name].last_error.startswith("final: refused")
    assert got["allowed"].state == "delivered"
    assert len(server.calls("/hook")) == 1


@pytest.mark.transport_dependent
def test_the_guard_is_read_from_the_environment(monkeypatch, server):
    monkeypatch.setenv("WEBHOOK_BLOCK_PRIVATE_NETWORKS", "true")
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker() as worker:
        assert worker.client.config.block_private_networks
        assert worker.send_webhook(server.url("/hook"), {}) is False
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8, 10.0.0.0/8")
    with WebhookSenderWorker() as worker:
        assert worker.send_webhook(server.url("/hook"), {}) is True
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "not-a-network")
    with pytest.raises(Exception, match="WEBHOOK_ALLOWED_NETWORKS.*not-a-network"):
        WebhookSenderWorker()
