"""Redirects followed by pollers: credentials never reach another origin, https never turns into http.

Two loopback servers on two ports are two origins. HTTPClient follows redirects
itself, so every test runs over both transports.
"""

import pytest

from syncworkers import HTTPClientConfig, PollerWorker, RequestError
from syncworkers.http.client import HTTPClient
from syncworkers.http.redirects import RedirectRefused

from .server import Reply

pytestmark = pytest.mark.transport_independent  # each test names its transport

TRANSPORTS = ["requests", "curl"]
KEY = "k-3f9a1c0e77b24d"


def client(transport, **kw):
    kw.setdefault("max_retries", 0)
    return HTTPClient(HTTPClientConfig(transport=transport, **kw))


def moved(to):
    return dict(status=302, headers={"Location": to})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_api_key_and_secret_default_headers_do_not_follow_to_another_port(transport, server, server2):
    server.route("GET", "/start", **moved(server2.url("/land")))
    server2.route("GET", "/land", json={"here": True})
    headers = {"X-Custom-Token": "tok-123456", "X-Partner": "partner-secret-9", "X-Trace": "trace-1"}
    with client(transport, auth_type="api_key", api_key=KEY, default_headers=headers,
                secret_headers=("X-Partner",)) as c:
        response = c.get(server.url("/start"))
    assert response.json() == {"here": True} and response.url == server2.url("/land")
    first, = server.calls("/start")
    assert first.header("X-API-Key") == KEY and first.header("X-Custom-Token") == "tok-123456"
    landed, = server2.calls("/land")
    assert landed.header("X-API-Key") is None
    assert landed.header("X-Custom-Token") is None and landed.header("X-Partner") is None
    assert landed.header("X-Trace") == "trace-1"  # not a credential: it goes along


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_api_key_under_a_name_that_does_not_say_secret_is_dropped_too(transport, server, server2):
    server.route("GET", "/start", **moved(server2.url("/land")))
    server2.route("GET", "/land", body=b"ok")
    with client(transport, auth_type="api_key", api_key=KEY, api_key_header="X-Partner-Id") as c:
        assert c.get(server.url("/start")).status_code == 200
    assert server.calls("/start")[0].header("X-Partner-Id") == KEY
    assert server2.calls("/land")[0].header("X-Partner-Id") is None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("auth", [dict(auth_type="bearer", bearer_token="b-7d1e0c55aa"),
                                  dict(auth_type="basic", basic_user="u", basic_password="p-0e1c77a5")])
def test_authorization_does_not_follow_to_another_port(transport, auth, server, server2):
    server.route("GET", "/start", **moved(server2.url("/land")))
    server2.route("GET", "/land", body=b"ok")
    with client(transport, **auth) as c:
        assert c.get(server.url("/start")).status_code == 200
    assert server.calls("/start")[0].header("Authorization")
    assert server2.calls("/land")[0].header("Authorization") is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_credentials_stay_on_a_same_origin_redirect(transport, server):
    server.route("GET", "/old", **moved("/new"))
    server.route("GET", "/new", body=b"ok")
    with client(transport, auth_type="api_key", api_key=KEY, default_headers={"X-Custom-Token": "tok-123456"}) as c:
        assert c.get(server.url("/old")).status_code == 200
    new, = server.calls("/new")
    assert new.header("X-API-Key") == KEY and new.header("X-Custom-Token") == "tok-123456"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cookies_of_one_host_never_reach_another(transport, server, server2):
    server.route("GET", "/login", headers={"Set-Cookie": "session=s-abc123; Path=/"}, body=b"in")
    # The redirect itself sets a cookie too, then sends the client to the other origin.
    server.route("GET", "/start", replies=[Reply(302, b"", {"Location": server2.url("/land"),
                                                            "Set-Cookie": "hop=h-456; Path=/"})])
    server.route("GET", "/again", **moved("/mine"))
    server.route("GET", "/mine", body=b"ok")
    server2.route("GET", "/land", body=b"ok")
    with client(transport) as c:
        c.get(server.url("/login"))
        assert c.get(server.url("/start")).status_code == 200
        assert c.get(server.url("/again")).status_code == 200
    assert "session=s-abc123" in server.calls("/start")[0].header("Cookie")
    assert server2.calls("/land")[0].header("Cookie") is None
    mine = server.calls("/mine")[0].header("Cookie")  # same origin: the jar's cookies go along
    assert "session=s-abc123" in mine and "hop=h-456" in mine


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_https_to_http_downgrade_is_refused(transport, tls_server, tls_files, server2):
    tls_server.route("GET", "/start", **moved(server2.url("/land")))
    server2.route("GET", "/land", body=b"ok")
    with client(transport, verify_ssl=str(tls_files / "server.pem"), auth_type="bearer",
                bearer_token="b-7d1e0c55aa") as c:
        with pytest.raises(RedirectRefused, match="https to http"):
            c.get(tls_server.url("/start"))
    assert len(tls_server.calls("/start")) == 1
    assert server2.calls("/land") == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_max_redirects_comes_from_the_config(transport, server):
    server.route("GET", "/loop", **moved("/loop"))
    with client(transport, max_redirects=2) as c:
        with pytest.raises(RequestError, match="too many redirects"):
            c.get(server.url("/loop"))
    assert len(server.calls("/loop")) == 3
    with client(transport, max_redirects=0) as c:
        with pytest.raises(RequestError, match="too many redirects"):
            c.get(server.url("/loop"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_307_keeps_method_and_body_but_not_the_credentials(transport, server, server2):
    server.route("POST", "/start", status=307, headers={"Location": server2.url("/land")})
    server2.route("POST", "/land", body=b"ok")
    with client(transport, auth_type="bearer", bearer_token="b-7d1e0c55aa") as c:
        assert c.post(server.url("/start"), json={"a": 1}).status_code == 200
    landed, = server2.calls("/land")
    assert landed.json() == {"a": 1} and landed.header("Authorization") is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_poller_with_an_api_key_follows_a_redirect_without_it(transport, server, server2):
    server.route("GET", "/feed", status=301, headers={"Location": server2.url("/feed")})
    server2.route("GET", "/feed", json=[1, 2])
    got = []

    class Poller(PollerWorker):
        def process_message(self, message):
            got.append(message.body)

    worker = Poller(server.url("/feed"), interval=10,
                    http_config=HTTPClientConfig(transport=transport, auth_type="api_key", api_key=KEY))
    try:
        worker.run_once()
    finally:
        worker.close()
    assert got == [[1, 2]]
    assert server.calls("/feed")[0].header("X-API-Key") == KEY
    assert server2.calls("/feed")[0].header("X-API-Key") is None
