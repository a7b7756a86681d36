"""The seam's values: the response HTTPClient.request() returns, the same over both transports."""

import datetime

import pytest

from syncworkers import HTTPClientConfig
from syncworkers.http.client import HTTPClient
from syncworkers.http.messages import Headers, Response

from .server import Reply

TRANSPORTS = ["requests", pytest.param("curl", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("pycurl") is None, reason="pycurl is not installed"))]


def test_headers_are_looked_up_in_any_case_and_keep_the_list():
    headers = Headers(lines=[b"HTTP/1.1 200 OK\r\n", b"Content-Type: application/json\r\n",
                             b"Set-Cookie: a=1\r\n", b"set-cookie: b=2\r\n", b"\r\n"])
    assert headers["content-type"] == headers.get("CONTENT-TYPE") == "application/json"
    assert headers["Set-Cookie"] == "a=1, b=2" and headers.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert dict(headers) == {"Content-Type": "application/json", "Set-Cookie": "a=1, b=2"}
    copy = headers.as_dict()  # the same, a dict of its own: changing it changes nothing here
    assert copy == dict(headers) and type(copy) is dict
    copy["Content-Type"] = "text/html"
    assert headers["Content-Type"] == "application/json"
    assert "SET-cookie" in headers and "X-None" not in headers and headers.get("X-None", "d") == "d"
    assert headers == {"content-type": "application/json", "set-cookie": "a=1, b=2"}
    assert headers.pairs == [("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")]


def test_a_response_reads_as_a_requests_response_does():
    body = '{"name": "zoë"}'.encode("utf-8")
    response = Response(201, Headers([("Content-Type", "application/json")]), body, "http://x/", reason="Created",
                        seconds=0.25)
    assert (response.ok, response.reason, response.json(), response.text) == (True, "Created", {"name": "zoë"},
                                                                              '{"name": "zoë"}')
    assert response.elapsed == datetime.timedelta(seconds=0.25) and response.history == []
    latin = Response(200, Headers([("Content-Type", "text/plain")]), "café".encode("latin-1"), "http://x/")
    assert latin.encoding == "ISO-8859-1" and latin.text == "café"
    assert not Response(404, Headers(), b"", "http://x/").ok


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_request_returns_the_same_response_over_both_transports(server, transport):
    server.route("GET", "/old", handler=lambda req: Reply(302, b"", {"Location": "/new"}))
    server.route("GET", "/new", handler=lambda req: Reply(200, '{"ok": true}', {
        "Content-Type": "application/json; charset=utf-8", "X-Trace": "t1"}))
    with HTTPClient(HTTPClientConfig(transport=transport, follow_redirects=True)) as client:
        response = client.get(server.url("/old"))
    assert isinstance(response, Response)
    assert (response.status_code, response.reason, response.ok) == (200, "OK", True)
    assert response.headers["x-trace"] == "t1" and response.json() == {"ok": True}
    assert response.text == '{"ok": true}' and response.content == b'{"ok": true}'
    assert response.url == server.url("/new") and response.encoding == "utf-8"
    assert [r.status_code for r in response.history] == [302]
    assert response.elapsed.total_seconds() > 0 and response.attempts == 1 and response.outcome.ok
