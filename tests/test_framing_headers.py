"""Headers that frame a request, belong to its connection or name its host are the transport's.

A caller's ``Transfer-Encoding``, ``Content-Length``, ``Host``... beside the transport's own
would put two framings on the wire (the precondition of request smuggling through a
proxy) or another host: every way in refuses them with a ValueError, alike on both
transports, and a raw-socket receiver on 127.0.0.1 records that nothing left, and that
what does leave carries exactly one framing and the URL's host.
"""

import pytest

from syncworkers import (
    ConfigError,
    HTTPClient,
    HTTPClientConfig,
    Message,
    PollerWorker,
    WebhookConfig,
    WebhookSenderWorker,
)

from .hostile import RecordingReceiver

TRANSPORTS = ["requests", "curl"]
#: One value each, as a caller would set them; several spellings of a name's case.
REFUSED = {
    "Transfer-Encoding": "chunked",
    "Content-Length": "0",
    "CONTENT-LENGTH": "7",
    "Connection": "close",
    "Upgrade": "h2c",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Keep-Alive": "timeout=5",
    "Proxy-Authorization": "Basic dXNlcjpwYXNz",
    "Proxy-Connection": "keep-alive",
    "Host": "evil.example",
    "host": "evil.example",
}


def request_fields(head):
    """(name lowercase, value) of each field of a recorded request head."""
    return [(line.split(":", 1)[0].strip().lower(), line.split(":", 1)[1].strip()) for line in head[1:]]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", list(REFUSED))
def test_a_callers_transport_header_is_refused_everywhere_and_nothing_is_sent(transport, name, monkeypatch,
                                                                              tmp_path):
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # trust_env below: requests' own path, never a proxy
    headers = {name: REFUSED[name]}
    http = HTTPClientConfig(transport=transport, max_retries=0)
    with RecordingReceiver() as receiver:
        config = WebhookConfig(outbox_path=str(tmp_path / "outbox.db"))
        with WebhookSenderWorker(receiver.base_url, config, http) as worker:
            calls = {
                "send_webhook": lambda: worker.send_webhook("/h", {"a": 1}, headers),
                "deliver": lambda: worker.deliver("/h", {"a": 1}, headers),
                "enqueue": lambda: worker.enqueue("/h", {"a": 1}, headers),
                "broadcast": lambda: worker.broadcast(["/h", "/g"], {"a": 1}, headers),
                "broadcast_webhook": lambda: worker.broadcast_webhook(["/h", "/g"], {"a": 1}, headers, True),
                "send_webhook_from_message": lambda: worker.send_webhook_from_message(Message({"a": 1}), "/h",
                                                                                      headers),
            }
            for call, send in calls.items():
                with pytest.raises(ValueError, match=f"header {name!r} is set by the HTTP transport"):
                    send()
            assert worker.outbox.counts()["pending"] == 0  # enqueue stored nothing
        for trust_env in (False, True):  # HTTPClient's own preparation, and requests' (trust_env)
            config = HTTPClientConfig(transport=transport, max_retries=0, trust_env=trust_env)
            with HTTPClient(config) as client:
                with pytest.raises(ValueError, match=f"header {name!r} is set by the HTTP transport"):
                    client.post(receiver.url("/h"), data=b"payload", headers=headers)
        with pytest.raises(ConfigError, match=f"header {name!r} is set by the HTTP transport"):
            PollerWorker(receiver.url("/p"), interval=5, headers=headers, http_config=http)
        with pytest.raises(ConfigError, match=f"default_headers .*header {name!r} is set by the HTTP transport"):
            HTTPClientConfig(default_headers=headers)
        with pytest.raises(ConfigError, match="api_key_header must not be a header the HTTP transport sets"):
            HTTPClientConfig(auth_type="api_key", api_key="k3y", api_key_header=name)
    assert receiver.connections == 0 and receiver.requests == []


def test_removing_a_session_header_with_none_is_still_allowed(server):
    """None drops one of the session's own headers (requests' convention): nothing of the caller's is sent."""
    server.route("GET", "/x", body=b"ok")
    with HTTPClient(HTTPClientConfig(max_retries=0)) as client:
        assert client.get(server.url("/x"), headers={"Connection": None}).status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_webhook_leaves_with_one_framing_and_the_urls_host(transport, tmp_path):
    http = HTTPClientConfig(transport=transport, max_retries=0)
    with RecordingReceiver() as receiver:
        config = WebhookConfig(outbox_path=str(tmp_path / "outbox.db"), retry_schedule=(0.01,))
        with WebhookSenderWorker(receiver.base_url, config, http) as worker:
            assert worker.deliver("/direct", {"a": 1}, {"X-Event": "e"}).ok
            assert all(worker.broadcast_webhook(["/b1", "/b2"], {"a": 1}, {"X-Event": "e"}).values())
            queued = worker.enqueue("/queued", {"a": 1}, {"X-Event": "e"})
            # A row an outbox stored before the rule (enqueue refuses these now): the transport frames it.
            legacy = worker.outbox.add("/legacy", receiver.url("/legacy"), b'{"a":1}',
                                       {"Transfer-Encoding": "chunked", "Content-Length": "0",
                                        "Host": "evil.example", "Connection": "close", "X-Event": "e"})
            assert worker.flush(20)
            assert [worker.outbox.get(i).state for i in (queued, legacy)] == ["delivered", "delivered"]
    heads = receiver.heads()
    assert sorted(head[0] for head in heads) == sorted(f"POST {path} HTTP/1.1" for path in
                                                       ("/direct", "/b1", "/b2", "/queued", "/legacy"))
    for head, raw in zip(heads, receiver.requests):
        fields = request_fields(head)
        names = [name for name, _ in fields]
        assert names.count("content-length") == 1 and "transfer-encoding" not in names, head
        assert dict(fields)["content-length"] == "7" and raw.endswith(b'\r\n\r\n{"a":1}'), head
        assert [value for name, value in fields if name == "host"] == [f"127.0.0.1:{receiver.port}"], head
        assert dict(fields)["x-event"] == "e"
