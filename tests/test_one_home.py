"""One home for each rule: every caller of a rule gets the same answer, because each goes through it.

Host keys, connection strings, hiding a URL's password, which header is secret, header
validity, what a successful poll is, number and interval checks, time left until a
deadline, the process owner id and the HTTP client's clock: each test below puts one
input through every caller of one rule.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse

import pytest

from syncworkers import (
    ConfigError,
    HTTPClient,
    HTTPClientConfig,
    PeriodicJob,
    PollerConfig,
    PollerWorker,
    RequestError,
    Runner,
    WebhookSenderWorker,
)
from syncworkers.config.connections import POSTGRESQL, SQLITE, parse_connection_url
from syncworkers.delivery.dispatch import Dispatcher
from syncworkers.delivery.request import check_headers
from syncworkers.http.breaker import breaker_key
from syncworkers.http.hosts import origin
from syncworkers.http.limits import host_key
from syncworkers.http.redirects import follow
from syncworkers.http.retry import RetryPolicy
from syncworkers.message import owner_id
from syncworkers.observability import events
from syncworkers.observability.redaction import safe_url
from syncworkers.outbox import Outbox, open_outbox
from syncworkers.outbox.health import endpoint_of
from syncworkers.outbox.store import Attempt
from syncworkers.polling.pagination import LinkHeaderPaginator, Page, PageRequest
from syncworkers.polling.state import open_state_store
from syncworkers.scheduling.coordination import open_coordination
from syncworkers.signals import Deadline

from .helpers import LogCapture
from .server import Reply

SECRET = "pw-s3cr3t-9f8e7d"


# -- 1. the host key -----------------------------------------------------------------------------


@pytest.mark.parametrize("url, authority", [
    ("http://[::1]:8080/hooks/a?x=1", "[::1]:8080"),
    ("https://user:pw@[2001:DB8::7]/hooks/a", "[2001:db8::7]:443"),
    ("http://Partner.Example/hooks/a", "partner.example:80"),
])
def test_a_host_gets_one_key_in_the_breaker_the_limits_the_metrics_and_the_outbox(url, authority):
    scheme = urllib.parse.urlsplit(url).scheme
    with HTTPClient(HTTPClientConfig()) as client:
        breaker = client.breakers.for_url(url)
    with Outbox(None) as box:
        id = box.add("e", url, b"{}")
        box.claim_due(1)
        box.mark_retry(id, 0.0, "status 500", 500, attempt=Attempt(at=0.0, duration=0.1, kind="retryable",
                                                                    status=500, error="status 500"))
        [health] = box.endpoints()  # the endpoint whose health the attempt was recorded under

    assert origin(url).authority == authority
    assert breaker.key == breaker_key(url) == f"{scheme}://{authority}"
    assert host_key(url) == authority  # what the host limits count per
    assert events.host_of(url) == authority  # the Prometheus host label
    host = authority.rsplit(":", 1)[0]
    assert health.endpoint == endpoint_of(url) and health.endpoint.startswith(host)
    assert health.endpoint.endswith("/hooks/a")
    assert urllib.parse.urlsplit(safe_url(url)).netloc.startswith(host)  # printed URLs and error text
    assert host in str(RequestError("failed", url=url))


def test_an_ipv6_origin_is_the_same_for_redirects_and_pagination():
    headers = {"Authorization": "Bearer t0ken-value", "Accept": "a/b"}
    same = follow("GET", "http://[::1]:80/a", 302, "http://[::1]/b", headers, None)
    other = follow("GET", "http://[::1]:8080/a", 302, "http://[::1]:8081/b", headers, None)
    assert not same.cross_origin and same.headers == headers  # the default port is the same origin
    assert other.cross_origin and other.headers == {"Accept": "a/b"}

    page = Page(request=PageRequest("https://[::1]/items"), status=200,
                headers={"Link": '<https://[::1]:443/items?page=2>; rel="next"'}, body=[1], items=[1],
                url="https://[::1]/items")
    assert LinkHeaderPaginator().next_request(page) == PageRequest("https://[::1]:443/items?page=2")


# -- 2 and 3. connection strings, and their passwords ---------------------------------------------


def test_one_parser_reads_every_location_and_a_sqlite_url_prints_back_as_given(tmp_path):
    folder = tmp_path / "with space"
    folder.mkdir()
    url = f"sqlite:///{urllib.parse.quote(str(folder))}/outbox.db"
    where = parse_connection_url(url)
    assert (where.kind, where.path, where.shown, str(where)) == (SQLITE, f"{folder}/outbox.db", url, url)

    with open_outbox(url) as box:  # the outbox and the poller state store open the same file
        box.add("e", "http://127.0.0.1:9/x", b"{}")
    store = open_state_store(url)
    store.set("poller", 1)
    assert store.path == f"{folder}/outbox.db" and os.path.exists(store.path)
    with Outbox(store.path) as box:
        assert box.counts()["pending"] == 1

    for bad in ("sqlite://host/x.db", "sqlite:///x.db?mode=ro", "ftp://h/x", "postgres:only-a-colon"):
        for opener in (open_outbox, open_state_store):
            with pytest.raises(ConfigError):
                opener(bad)


def test_every_postgresql_spelling_is_accepted_wherever_postgresql_is_and_no_password_is_printed(pg_db, tmp_path):
    parts = urllib.parse.urlsplit(pg_db)
    with_password = parts._replace(netloc=f"postgres:{SECRET}@{parts.hostname}:{parts.port}").geturl()
    spellings = [with_password.replace("postgresql://", scheme, 1)
                 for scheme in ("postgresql://", "postgres://", "postgresql+psycopg://")]
    printed = []
    for n, url in enumerate(spellings):
        assert parse_connection_url(url).kind == POSTGRESQL
        with open_outbox(url) as box:
            box.add(f"e{n}", "http://127.0.0.1:9/x", b"{}")
            printed += [box.path, repr(box)]
        store = open_state_store(url)
        store.set(f"p{n}", n)
        assert store.get(f"p{n}") == n
        printed.append(repr(store))
        claims = open_coordination(url)
        try:
            assert claims.claim(f"job{n}", 1, ttl=30) is True
            printed.append(repr(claims))
        finally:
            claims.close()
    with open_outbox(spellings[0]) as box:
        assert box.counts()["pending"] == 3  # all three spellings reached the same database
    for text in printed:
        assert SECRET not in text and "127.0.0.1" in text


def test_redis_urls_are_parsed_once_and_their_password_stays_out_of_every_error():
    bad = [f"redis://:{SECRET}@127.0.0.1:notaport/0", f"ftp://:{SECRET}@127.0.0.1/0",
           f"redis://:{SECRET}@127.0.0.1/0?socket_timeout=x{SECRET}"]
    from syncworkers.sources.redis import RedisListConsumer

    for url in bad:
        for build in (lambda: RedisListConsumer("q", url), lambda: open_coordination(url)):
            with pytest.raises(ConfigError) as info:
                build()
            assert SECRET not in str(info.value)


# -- 4. which header is secret ------------------------------------------------------------------


def test_one_redactor_decides_what_a_client_drops_on_redirect_and_masks_in_its_logs(server, server2, caplog):
    server2.route("GET", "/landing", status=200, body=b"ok")
    server.route("GET", "/start", status=302, headers={"Location": server2.url("/landing")})
    config = HTTPClientConfig(auth_type="api_key", api_key="ak-0123456789", api_key_header="X-Partner",
                              default_headers={"X-Partner-Ident": "p-0451-private", "X-Plain": "plain"},
                              secret_headers=("X-Partner-Ident",), max_retries=0)
    with HTTPClient(config) as client:
        client.request("GET", server.url("/start"))
        client.logger.warning("headers were X-Partner-Ident: p-0451-private and X-Partner: ak-0123456789")
        redactor = client.redactor

    [first], [landed] = server.calls("/start"), server2.calls("/landing")
    assert first.headers["X-Partner"] == "ak-0123456789" and first.headers["X-Partner-Ident"] == "p-0451-private"
    assert "X-Partner" not in landed.headers and "X-Partner-Ident" not in landed.headers  # another origin
    assert landed.headers["X-Plain"] == "plain"
    assert redactor.is_secret_key("x-partner") and redactor.is_secret_key("X-Partner-Ident")
    assert "p-0451-private" not in caplog.text and "ak-0123456789" not in caplog.text
    assert "X-Partner-Ident: ***" in caplog.text


def test_a_pollers_secret_header_is_masked_whole_and_without_its_scheme(server):
    server.route("GET", "/items", status=500, body=b"no")
    with LogCapture() as logs:
        with PollerWorker(server.url("/items"), interval=60, headers={"Authorization": "Token tk-0451-abcdef"},
                          http_config=HTTPClientConfig(max_retries=0)) as poller:
            poller.poll()
            poller.logger.error("the partner quoted tk-0451-abcdef back")
    assert "tk-0451-abcdef" not in logs.text and "the partner quoted *** back" in logs.text
    assert server.calls("/items")[0].headers["Authorization"] == "Token tk-0451-abcdef"


# -- 5. header validity ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("X Bad", "v"), ("X-Bad:", "v"), ("X-Ok", " leading space"),
                                         ("X-Ok", "line\r\nbreak"), ("X-Ok", "nul\x00")])
def test_a_bad_header_is_refused_alike_by_the_config_the_client_the_poller_and_the_outbox(name, value, server):
    server.route("GET", "/x", status=200)
    with pytest.raises(ValueError):
        check_headers({name: value})  # deliver(), broadcast and enqueue() (the outbox stores nothing bad)
    with pytest.raises(ConfigError):
        PollerWorker(server.url("/x"), interval=60, headers={name: value})
    with HTTPClient(HTTPClientConfig(max_retries=0)) as client:
        with pytest.raises(ValueError):
            client.request("GET", server.url("/x"), headers={name: value})
    if value == "v":
        for field in ("secret_headers", "api_key_header"):
            with pytest.raises(ConfigError):
                HTTPClientConfig(**{field: (name,) if field == "secret_headers" else name})
    with WebhookSenderWorker(server.base_url) as sender:
        with pytest.raises(ValueError):
            sender.enqueue("/x", {"n": 1}, headers={name: value})
        assert sender.outbox.counts()["pending"] == 0
    assert server.calls("/x") == []  # nothing was sent


# -- 6. what a successful poll is ----------------------------------------------------------------


class _Observer:
    def __init__(self):
        self.polls, self.attempts = [], []

    def on_poll(self, worker, outcome, seconds):
        self.polls.append(outcome)

    def on_skipped_ticks(self, worker, count):
        pass

    def on_delivery(self, host, outcome):
        pass

    def on_attempt(self, host, result, seconds):
        self.attempts.append(result)


def test_a_304_is_a_successful_poll_for_the_poller_and_for_the_metrics(server):
    server.route("GET", "/feed", replies=[Reply(200, b"[]", {"ETag": '"v1"'}), Reply(304, b""), Reply(500, b"")])
    observer = _Observer()
    events.subscribe(observer)
    try:
        with PollerWorker(server.url("/feed"), interval=60, http_config=HTTPClientConfig(max_retries=0)) as poller:
            failures = []
            for _ in range(3):
                poller.poll()
                failures.append(poller.health()["consecutive_failures"])
            health = poller.health()
    finally:
        events.unsubscribe(observer)
    assert observer.polls == ["success", "success", "http_error"]
    assert failures == [0, 0, 1]
    counters = health["counters"]
    assert (counters["responses_2xx"], counters["responses_3xx"], counters["responses_5xx"]) == (1, 1, 1)


def test_a_senders_attempts_and_a_pollers_responses_use_the_same_status_classes(server):
    server.route("POST", "/hook", status=204)
    server.route("GET", "/feed", status=204)
    observer = _Observer()
    events.subscribe(observer)
    try:
        with WebhookSenderWorker(server.base_url) as sender:
            assert sender.send_webhook("/hook", {"n": 1})
        with PollerWorker(server.url("/feed"), interval=60) as poller:
            poller.poll()
            counters = poller.health()["counters"]
    finally:
        events.unsubscribe(observer)
    assert observer.attempts == ["2xx"] and counters["responses_2xx"] == 1


# -- 7. numbers and intervals ---------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0, -1, 7 * 86400 + 1, float("inf"), True, "60"])
def test_an_interval_is_refused_alike_by_the_poller_config_the_poller_and_a_job(interval):
    builders = [lambda: PollerConfig(interval=interval),
                lambda: PollerWorker("http://127.0.0.1:9/x", interval=interval),
                lambda: PeriodicJob("job", interval, lambda: None)]
    messages = []
    for build in builders:
        with pytest.raises(ConfigError) as info:
            build()
        messages.append(re.search(r"interval must be [^,;]*", str(info.value)).group(0))
    assert len(set(messages)) == 1, messages


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "4"])
def test_counts_are_refused_alike_where_they_enter(value):
    from syncworkers.observability.ops_server import OpsServer
    from syncworkers.polling.pagination import OffsetPaginator
    from syncworkers.sources.redis import RedisListConsumer

    builders = [lambda: Runner([], max_workers=value), lambda: OffsetPaginator(limit=value),
                lambda: PollerWorker("http://127.0.0.1:9/x", interval=60, max_pages=value),
                lambda: RedisListConsumer("q", "redis://127.0.0.1:9/0", max_deliveries=value)]
    if value != 0:  # port 0 picks a free port
        builders.append(lambda: OpsServer(Runner([]), [], port=value if value != -2 else 70000))
    messages = []
    for build in builders:
        with pytest.raises(ConfigError) as info:
            build()
        messages.append(re.sub(r"^.*?(must be)", r"\1", str(info.value)))
    assert len(set(messages)) == 1 or value == -2, messages  # one rule, one message (a port's bound aside)


# -- 8. time left until a deadline ------------------------------------------------------------------


def test_a_deadline_counts_down_on_its_clock_and_none_is_no_deadline():
    now = [100.0]
    deadline = Deadline(2.5, clock=lambda: now[0])
    assert (deadline.remaining(), deadline.expired, deadline.cap(10.0), deadline.cap(1.0)) == (2.5, False, 2.5, 1.0)
    now[0] = 103.0
    assert (deadline.remaining(), deadline.expired, deadline.cap(10.0)) == (0.0, True, 0.0)
    endless = Deadline(None, clock=lambda: now[0])
    assert (endless.remaining(), endless.expired, endless.cap(4.0)) == (None, False, 4.0)
    assert Deadline(-5, clock=lambda: now[0]).remaining() == 0.0


# -- 9. the process owner id ----------------------------------------------------------------------------


def test_the_outbox_tick_claims_and_redis_consumers_name_this_process_alike():
    import redis as redis_py

    from syncworkers.scheduling.coordination import RedisTickClaims
    from syncworkers.sources.redis import RedisListConsumer

    shape = re.compile(rf"^[^:]+:{os.getpid()}:[0-9a-f]{{8}}$")
    client = redis_py.Redis(host="127.0.0.1", port=1)  # never connected: only the names are compared
    consumer = RedisListConsumer("q", client=client)
    with Outbox(None) as box:
        names = [owner_id(), box.owner, consumer.consumer_id, RedisTickClaims(client)._owner]
    client.close()
    assert all(shape.match(name) for name in names), names
    assert len(set(names)) == len(names)  # and each is its own


# -- 10. the HTTP client's clock --------------------------------------------------------------------


def test_the_http_client_times_attempts_on_the_clock_it_is_given(server):
    server.route("GET", "/x", status=200)
    ticks = iter(range(0, 1000, 7))
    seen = []
    with HTTPClient(HTTPClientConfig(max_retries=0), clock=lambda: float(next(ticks))) as client:
        client.on_attempt = lambda url, status, error, seconds: seen.append(seconds)
        client.get(server.url("/x"))
    assert seen and all(seconds > 0 and seconds % 7 == 0 for seconds in seen)


# -- 11. the outbox CLI's end: the dispatcher's own goal, not a polled predicate ---------------------------


def test_a_due_only_flush_ends_once_nothing_is_due_now(tmp_path, clock):
    outbox = Outbox(str(tmp_path / "o.db"), clock=clock)
    sent = []
    dispatcher = Dispatcher(outbox, send=lambda delivery, now: sent.append(delivery.id) or _ok(),
                            submit=_run_now, free_slots=lambda: 4, policy=RetryPolicy.from_schedule((60.0,)))
    now_id = outbox.add("e", "http://127.0.0.1:9/x", b"{}")
    later = outbox.add("e", "http://127.0.0.1:9/y", b"{}", now=clock() + 3600)
    turns = []
    stop = threading.Event()  # never set: the flush ends by its goal
    assert dispatcher.flush(10, stop, due_only=True, on_turn=lambda: turns.append(1)) is True
    assert sent == [now_id] and outbox.get(later).state == "pending" and turns
    outbox.close()


def _ok():
    from syncworkers.http.outcome import classify_status

    return classify_status(200)


def _run_now(func, *args):
    from concurrent.futures import Future

    future: Future = Future()
    func(*args)
    future.set_result(None)
    return future


# -- the rules' homes are where the callers import them from ----------------------------------------------


def test_no_module_spells_a_rule_out_again():
    """The code each rule replaced, searched for outside the rule's home."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "syncworkers")
    patterns = {  # what it looked like -> its one home
        re.compile(r"hostname or \"\"\)?\s*\n\s*if parts\.port"): "http/hosts.py",
        re.compile(r"// 100"): "http/outcome.py",
        re.compile(r"deadline - time\.monotonic\(\)"): "signals.py",
        re.compile(r"gethostname\(\)"): "message.py",
        re.compile(r"\[!#\$%&'\*\+"): "http/headers.py",
        re.compile(r"isinstance\(\w+, int\) or isinstance\(\w+, bool\)"): "config/validators.py",
        re.compile(r"^_(secrets|names)\b", re.M): "observability/redaction.py",
        re.compile(r"split\(\"://\", 1\)\[0\]"): "config/connections.py",
    }
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py"):
                text = open(path, encoding="utf-8").read()
                found += [f"{os.path.relpath(path, root)} repeats {home}" for pattern, home in patterns.items()
                          if pattern.search(text) and os.path.relpath(path, root) != home]
    assert found == []
