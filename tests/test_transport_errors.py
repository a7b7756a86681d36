"""Every transport maps what a broken receiver does into the same exceptions (real sockets, 127.0.0.1)."""

import gzip

import pytest

from syncworkers import ConfigError, HTTPClientConfig, RequestError, ResponseTooLarge, TransportError
from syncworkers.http.client import HTTPClient

from .helpers import closed_port
from .hostile import HostileReceiver

pytestmark = pytest.mark.transport_independent  # each test names its transport

TRANSPORTS = ["requests", "curl"]


def answer(raw):
    def behaviour():
        yield raw, 0

    return behaviour


def config(transport, **kw):
    kw.setdefault("max_retries", 0)
    return HTTPClientConfig(transport=transport, **kw)


CASES = {
    "garbage instead of HTTP": (answer(b"SSH-2.0-OpenSSH\r\n\r\n"), TransportError, "connection failed"),
    "closed mid-body": (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"), TransportError,
                        "connection failed"),
    "broken chunked body": (answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n"),
                            TransportError, "connection failed"),
    "bad gzip body": (answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"),
                      TransportError, "connection failed"),
    "body over the cap, announced": (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000),
                                     ResponseTooLarge, "of 5000 bytes exceeds 1024"),
    "body over the cap, chunked": (answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"x" * 1024
                                          + b"\r\n0\r\n\r\n"), ResponseTooLarge, "exceeds 1024 bytes"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_broken_answer_maps_to_our_errors(transport, case):
    behaviour, error, fragment = CASES[case]
    with HostileReceiver(behaviour) as receiver, HTTPClient(config(transport, max_response_size=1024)) as client:
        with pytest.raises(error, match=fragment) as info:
            client.get(receiver.url("/x"))
    assert info.value.attempts == 1
    if error is ResponseTooLarge:
        assert info.value.status == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_gzip_body_is_decoded(transport):
    body = gzip.compress(b'{"ok": true}')
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with HostileReceiver(answer(raw)) as receiver, HTTPClient(config(transport)) as client:
        assert client.get(receiver.url("/x")).json() == {"ok": True}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connection_refused_is_a_transport_error(transport):
    with HTTPClient(config(transport)) as client:
        with pytest.raises(TransportError, match="connection failed"):
            client.get(f"http://127.0.0.1:{closed_port()}/x")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_too_many_redirects(transport, server):
    server.route("GET", "/loop", status=302, headers={"Location": "/loop"})
    with HTTPClient(config(transport, max_redirects=3)) as client:
        with pytest.raises(RequestError, match="too many redirects"):
            client.get(server.url("/loop"))
    assert len(server.calls("/loop")) == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_redirects_followed_per_config_and_post_turns_into_get(transport, server):
    server.route("POST", "/old", status=302, headers={"Location": "/new"})
    server.route("GET", "/new", json={"here": True})
    with HTTPClient(config(transport)) as client:
        response = client.post(server.url("/old"), json={"a": 1})
        assert (response.status_code, response.json(), response.url) == (200, {"here": True}, server.url("/new"))
        assert client.post(server.url("/old"), json={"a": 1}, allow_redirects=False).status_code == 302


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_scheme_other_than_http_is_a_config_error(transport):
    with HTTPClient(config(transport)) as client, pytest.raises(ConfigError, match="URL"):
        client.get("ftp://127.0.0.1/file")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_methods_bodies_and_headers_go_over_the_wire_as_given(transport, server):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        server.route(method, "/m", status=200, body=b"" if method == "HEAD" else b"ok")
    with HTTPClient(config(transport, default_headers={"X-Default": "d"})) as client:
        for method in ("POST", "HEAD", "PUT", "GET", "DELETE", "PATCH", "OPTIONS", "GET"):
            body = b"payload" if method in ("POST", "PUT", "PATCH") else None
            response = client.request(method, server.url("/m"), data=body, headers={"X-Call": method})
            assert response.status_code == 200
            assert response.content == (b"" if method == "HEAD" else b"ok")
    calls = server.calls("/m")
    assert [c.method for c in calls] == ["POST", "HEAD", "PUT", "GET", "DELETE", "PATCH", "OPTIONS", "GET"]
    for call in calls:
        assert call.header("X-Call") == call.method and call.header("X-Default") == "d"
        assert call.body == (b"payload" if call.method in ("POST", "PUT", "PATCH") else b"")
        assert call.header("Expect") is None
    assert calls[0].header("Content-Type") is None  # raw bytes: no form type made up


def test_curl_without_pycurl_is_a_config_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pycurl", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "syncworkers.http.transport.curl", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'syncworkers\[curl\]'"):
        HTTPClient(HTTPClientConfig(transport="curl"))


def test_an_unknown_transport_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="transport"):
        HTTPClientConfig(transport="httpx")
    monkeypatch.setenv("HTTP_TRANSPORT", "smoke-signals")
    with pytest.raises(ConfigError, match="HTTP_TRANSPORT|transport"):
        HTTPClientConfig.from_env()
