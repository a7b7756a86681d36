"""HTTPClient's fast request preparation builds exactly what requests' own path builds."""

import pytest
import requests

from syncworkers import HTTPClient, HTTPClientConfig


CASES = [
    dict(headers=None),
    dict(headers={"X-Extra": "1", "user-agent": "override"}, data=b'{"a":1}'),
    dict(headers={"Accept": None}, json={"a": [1, 2]}),  # None removes a session header
    dict(headers={"X-Bytes": b"v"}, data="text body"),
    dict(params={"q": "a b", "n": 2}),
    dict(url="http://user:pa%20ss@127.0.0.1:9/p?x=1"),
    dict(url="http://127.0.0.1:9/ünïcode path", data={"form": "field"}),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cookies", [False, True])
def test_fast_prepare_builds_what_requests_builds(case, cookies):
    client = HTTPClient(HTTPClientConfig(default_headers={"X-Default": "d"}, auth_type="bearer",
                                         bearer_token="t0ken"))
    try:
        if cookies:
            client.session.cookies.set("sid", "abc", domain="127.0.0.1", path="/")
        url = case.get("url", "http://127.0.0.1:9/hook")
        args = (case.get("params"), case.get("headers"), case.get("json"), case.get("data"))
        fast = client._prepare("POST", url, *args)
        fast_again = client._prepare("POST", url, *args)  # the cached URL serves the same
        ref = client.session.prepare_request(requests.Request(
            "POST", url, params=args[0], headers=args[1], json=args[2], data=args[3]))
        for got in (fast, fast_again):
            assert (got.method, got.url, got.body) == (ref.method, ref.url, ref.body)
            assert list(got.headers.items()) == list(ref.headers.items())
            assert got.hooks == ref.hooks
            assert [c.name for c in got._cookies] == [c.name for c in ref._cookies]
    finally:
        client.close()


def test_a_session_changed_after_construction_takes_requests_path():
    client = HTTPClient(HTTPClientConfig())
    try:
        client.session.headers["X-Later"] = "1"
        client.session.params = {"k": "v"}
        got = client._prepare("GET", "http://127.0.0.1:9/a", None, None, None, None)
        assert got.headers["X-Later"] == "1" and got.url.endswith("/a?k=v")
        client.session.headers["X-Bad"] = "a\r\nb"
        with pytest.raises(requests.exceptions.InvalidHeader):
            client._prepare("GET", "http://127.0.0.1:9/a", None, None, None, None)
    finally:
        client.close()
