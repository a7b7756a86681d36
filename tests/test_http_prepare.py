"""HTTPClient builds the request requests' own path would prepare, as the project's own Request value."""

import pytest
import requests

from syncworkers import HTTPClient, HTTPClientConfig
from syncworkers.http.messages import Request


CASES = [
    dict(headers=None),
    dict(headers={"X-Extra": "1", "user-agent": "override"}, data=b'{"a":1}'),
    dict(headers={"Accept": None}, json={"a": [1, 2]}),  # None removes a session header
    dict(headers={"X-Bytes": b"v"}, data="text body"),
    dict(params={"q": "a b", "n": 2}),
    dict(params=[("k", ["1", "2"]), ("skip", None)], url="http://127.0.0.1:9/p?x=1#frag"),
    dict(url="http://user:pa%20ss@127.0.0.1:9/p?x=1"),
    dict(url="http://127.0.0.1:9/ünïcode path", data={"form": "field"}),
]


def _as_bytes(body):
    return body.encode("latin-1") if isinstance(body, str) else body


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cookies", [False, True])
def test_the_built_request_is_what_requests_prepares(case, cookies):
    client = HTTPClient(HTTPClientConfig(default_headers={"X-Default": "d"}, auth_type="bearer",
                                         bearer_token="t0ken"))
    try:
        if cookies:
            client.session.cookies.set("sid", "abc", domain="127.0.0.1", path="/")
        url = case.get("url", "http://127.0.0.1:9/hook")
        kwargs = {k: case.get(k) for k in ("params", "headers", "json", "data")}
        built = client.build("POST", url, **kwargs)
        again = client.build("POST", url, **kwargs)  # the per-URL pieces cached serve the same
        ref = client.session.prepare_request(requests.Request("POST", url, **kwargs))
        expected_headers = [(k, v) for k, v in ref.headers.items() if k != "Content-Length"]
        for got in (built, again):
            assert isinstance(got, Request)
            assert (got.method, got.url, got.body) == (ref.method, ref.url, _as_bytes(ref.body))
            assert list(got.headers) == expected_headers
            assert got.timeouts == client.timeout and got.deadline == client.deadline
    finally:
        client.close()


def test_headers_changed_after_construction_are_sent_and_checked():
    client = HTTPClient(HTTPClientConfig())
    try:
        assert client.build("GET", "http://127.0.0.1:9/a").header("X-Later") is None
        client.session.headers["X-Later"] = "1"
        assert client.build("GET", "http://127.0.0.1:9/a").header("X-Later") == "1"
        client.session.headers["X-Bad"] = "a\r\nb"
        with pytest.raises(ValueError, match="line break"):  # the header rule (syncworkers.http.headers)
            client.build("GET", "http://127.0.0.1:9/a")
        del client.session.headers["X-Bad"]
        client.session.params = {"k": "v"}  # (requests' own preparation from here on)
        assert client.build("GET", "http://127.0.0.1:9/a").url.endswith("/a?k=v")
    finally:
        client.close()


def test_a_header_added_per_attempt_replaces_one_of_the_same_name():
    request = Request("POST", "http://127.0.0.1:9/", (("Traceparent", "old"), ("X-A", "1")), b"", (1.0, 1.0), 5.0)
    changed = request.with_header("traceparent", "00-abc-def-01")
    assert changed.headers == (("X-A", "1"), ("traceparent", "00-abc-def-01"))
    assert request.header("traceparent") == "old"  # the original is unchanged


@pytest.mark.parametrize("name, value", [("X-Bad", "a\r\nb"), ("X-Bad", "trailing\n"), ("X-Bad", " lead"),
                                         ("Bad:Name", "v"), ("X-Bad", 5)])
def test_a_call_header_the_header_rule_refuses_is_refused(name, value):
    with HTTPClient(HTTPClientConfig()) as client:
        with pytest.raises((ValueError, TypeError)):
            client.build("GET", "http://127.0.0.1:9/a", headers={name: value})
