"""A URL's host is taken as the wire will carry it, where the URL enters.

Unicode hosts are IDNA-encoded (UTS-46, as requests encodes them), so ``http://127。0。0。1/``
is ``http://127.0.0.1/`` for the request, the SSRF guard, the circuit breaker and the
outbox alike; a host no transport can send to is a ConfigError at the constructor,
``deliver`` / ``enqueue`` or ``poll`` setup, never a transport's own exception later.
Only 127.0.0.1 is ever contacted: the IDN below is converted and stored, never sent.
"""

import pytest

from syncworkers import (
    ConfigError,
    HTTPClient,
    HTTPClientConfig,
    PollerConfig,
    PollerWorker,
    WebhookConfig,
    WebhookSenderWorker,
)
from syncworkers.http.hosts import origin

TRANSPORTS = ["requests", "curl"]
#: Spellings of 127.0.0.1 that UTS-46 maps to it: ideographic full stops, circled and fullwidth digits.
LOOPBACK = ["127。0。0。1", "①②⑦.0.0.1", "１２７．０．０．１", "%31%32%37.0.0.1", "127.0.0.1."]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("host", LOOPBACK)
def test_a_unicode_spelling_of_the_loopback_is_sent_to_it_from_every_entry(transport, host, server, tmp_path):
    server.route("POST", "/h", status=200)
    server.route("GET", "/p", json={"ok": True})
    real = f"127.0.0.1:{server.port}"
    given = f"http://{host}:{server.port}"
    http = HTTPClientConfig(transport=transport, max_retries=0)
    config = WebhookConfig(outbox_path=str(tmp_path / "outbox.db"), retry_schedule=(0.01,))
    with WebhookSenderWorker(given, config, http) as worker:
        assert worker.base_url == f"http://{real}"
        direct = worker.deliver("/h", {"a": 1})
        absolute = worker.deliver(given + "/h", {"a": 1})
        queued = worker.enqueue(given + "/h", {"a": 1})
        assert worker.outbox.get(queued).url == f"http://{real}/h"
        assert worker.flush(20) and worker.outbox.get(queued).state == "delivered"
    assert (direct.ok, absolute.ok) == (True, True)
    assert direct.url == absolute.url == f"http://{real}/h"
    assert origin(absolute.url).key == f"http://{real}"  # the breaker's key: the real host
    poller = PollerWorker(given + "/p", interval=5, http_config=http)
    assert poller.url == f"http://{real}/p" and poller.poll().ok
    with HTTPClient(http) as client:
        assert client.get(given + "/p").json() == {"ok": True}
    assert [r.header("Host") for r in server.requests] == [real] * len(server.requests)
    assert len(server.requests) == 5


def test_an_internationalised_name_is_stored_in_its_ascii_form(tmp_path):
    """Converted where it enters (UTS-46: case folded, ß kept); nothing is sent."""
    config = WebhookConfig(outbox_path=str(tmp_path / "outbox.db"))
    with WebhookSenderWorker("http://Bücher.Example/api", config) as worker:
        assert worker.base_url == "http://xn--bcher-kva.example/api"
        stored = worker.outbox.get(worker.enqueue("https://faß.de/hook?x=ü", {"a": 1}))
        assert stored.url == "https://xn--fa-hia.de/hook?x=ü"  # the host only: the query is the transport's
        assert worker.outbox.get(worker.enqueue("/hook", {"a": 1})).url == "http://xn--bcher-kva.example/api/hook"
    assert PollerConfig(url="http://ｅｘａｍｐｌｅ.com/x").url == "http://example.com/x"
    assert HTTPClientConfig(base_url="http://user:pw@bücher.example:8080").base_url == \
        "http://user:pw@xn--bcher-kva.example:8080"


BAD_HOSTS = {
    "an emoji": "http://😀.example/h",
    "a right-to-left label with digits": "http://١٢٧.0.0.1/h",
    "an empty label": "http://a..example/h",
    "a leading dot": "http://.example/h",
    "two root dots": "http://localhost../h",
    "a wildcard": "http://*.example/h",
    "a label over 63 characters": f"http://{'a' * 64}.example/h",
    "a NUL escaped": "http://127.0.0.1%00/h",
    "an IPv6 zone": "http://[fe80::1%25eth0]:80/h",
    "junk after the brackets": "http://[::1].:80/h",
    "an IPvFuture literal": "http://[v1.x]/h",
}


@pytest.mark.parametrize("case", list(BAD_HOSTS))
def test_a_host_no_transport_can_send_to_is_a_config_error_where_it_enters(case, tmp_path):
    url = BAD_HOSTS[case]
    base = url.rsplit("/", 1)[0]
    for build in (lambda: WebhookSenderWorker(base), lambda: WebhookConfig(base_url=base),
                  lambda: WebhookConfig(endpoints={"e": url}), lambda: PollerConfig(url=url),
                  lambda: PollerWorker(url, interval=5), lambda: HTTPClientConfig(base_url=base)):
        with pytest.raises(ConfigError, match="host|port"):
            build()
    with WebhookSenderWorker(webhook_config=WebhookConfig(outbox_path=str(tmp_path / "o.db"))) as worker:
        for send in (lambda: worker.deliver(url, {}), lambda: worker.send_webhook(url, {}),
                     lambda: worker.enqueue(url, {}), lambda: worker.broadcast([url], {})):
            with pytest.raises(ConfigError, match="host|port"):
                send()
        assert worker.outbox.counts()["pending"] == 0
    with HTTPClient(HTTPClientConfig(max_retries=0)) as client, pytest.raises(ConfigError, match="host|port"):
        client.get(url)


def test_a_redirect_to_a_host_no_transport_can_send_to_is_refused(server):
    from syncworkers.http.redirects import RedirectRefused

    server.route("GET", "/start", status=302, headers={"Location": "http://a..example/x"})
    with HTTPClient(HTTPClientConfig(max_retries=0)) as client:
        with pytest.raises(RedirectRefused, match="invalid URL.*empty label"):
            client.get(server.url("/start"))
    assert len(server.requests) == 1
