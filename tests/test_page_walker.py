"""The page walker built alone: a client, a store, rate limits and callbacks, against a loopback server."""

import pytest

from syncworkers import HTTPClientConfig, IncrementalCursor, OffsetPaginator, PollerWorker, RateLimits
from syncworkers.exceptions import PaginationError, RetryInterrupted, TransportError
from syncworkers.http.client import HTTPClient
from syncworkers.observability.logging import get_logger
from syncworkers.observability.metrics import Metrics
from syncworkers.polling.pages import PageWalker, PollOutcome
from syncworkers.polling.state import MemoryStateStore
from syncworkers.signals import StopSignal

from .helpers import LogCapture, closed_port
from .server import Reply

LOG = get_logger("syncworkers.tests.walker", worker="walker-test")


class Parts:
    """What a walker is given, kept to look at: a client, a store, counters and what the callbacks saw."""

    def __init__(self):
        self.client = HTTPClient(HTTPClientConfig(max_retries=0))
        self.state = MemoryStateStore()
        self.stats = Metrics()
        self.messages, self.errors, self.records = [], [], []

    def walker(self, url, **kwargs):
        kwargs.setdefault("process_message", self.process_message)
        return PageWalker(self.client, url, interval=kwargs.pop("interval", 10.0), state=self.state,
                          stats=self.stats, on_poll_error=self.errors.append, record=self.records.append,
                          **kwargs)

    def process_message(self, message):
        self.messages.append(message)
        return message.body


@pytest.fixture
def parts():
    made = Parts()
    yield made
    made.client.close()


def walk(walker, key="walker-test", stop=None):
    return walker.walk(StopSignal() if stop is None else stop, key, LOG)


def test_a_walk_hands_each_extracted_item_to_process_message_and_records_a_success(server, parts):
    server.route("GET", "/items", json={"items": [{"id": 1}, {"id": 2}]})
    walker = parts.walker(server.url("/items"), headers={"X-Team": "a"}, params={"q": "x"},
                          data_extractor=lambda body: body["items"])
    outcome = walk(walker)
    assert outcome == PollOutcome(ok=True, status_code=200, results=[{"id": 1}, {"id": 2}], messages=2)
    assert [m.headers["status_code"] for m in parts.messages] == [200, 200]
    [call] = server.calls("/items")
    assert call.query == "q=x" and call.header("X-Team") == "a"
    assert parts.records == [True] and parts.errors == []
    assert parts.stats["polls"] == 1 and parts.stats["responses_2xx"] == 1 and parts.stats["messages"] == 2


def test_an_error_status_is_a_message_and_the_poll_counts_as_failed(server, parts):
    server.route("GET", "/items", status=503, json={"down": True})
    outcome = walk(parts.walker(server.url("/items"), data_extractor=lambda body: body["items"]))
    assert outcome.ok and outcome.status_code == 503
    assert [m.body for m in parts.messages] == [{"down": True}]  # not split: the extractor is for 2xx
    assert parts.records == [False]


def test_validators_of_a_2xx_first_page_are_sent_back_and_a_304_delivers_nothing(server, parts):
    server.route("GET", "/feed", replies=[
        Reply(200, b'{"n": 1}', {"Content-Type": "application/json", "ETag": '"v1"',
                                 "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"}),
        Reply(304)])
    walker = parts.walker(server.url("/feed"))
    assert walk(walker).results == [{"n": 1}]
    assert walker.validators == {"If-None-Match": '"v1"', "If-Modified-Since": "Wed, 01 Jan 2025 00:00:00 GMT"}
    assert walk(walker) == PollOutcome(ok=True, status_code=304)
    first, second = server.calls("/feed")
    assert first.header("If-None-Match") is None
    assert second.header("If-None-Match") == '"v1"'
    assert second.header("If-Modified-Since") == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert len(parts.messages) == 1 and parts.records == [True, True] and parts.stats["not_modified"] == 1


@pytest.mark.parametrize("kwargs", [{"conditional": False}, {"method": "POST"}])
def test_no_validators_without_conditional_requests_or_for_an_unsafe_method(server, parts, kwargs):
    server.route(kwargs.get("method", "GET"), "/feed", headers={"ETag": '"v1"'}, json=[])
    walker = parts.walker(server.url("/feed"), **kwargs)
    walk(walker)
    walk(walker)
    assert [c.header("If-None-Match") for c in server.calls("/feed")] == [None, None]


def offset_api(req):
    offset = int(dict(p.split("=") for p in req.query.split("&"))["offset"])
    return Reply(200, str(list(range(offset, min(offset + 2, 5)))).encode(), {"Content-Type": "application/json"})


def test_pages_are_walked_up_to_max_pages_and_the_rest_waits_for_the_next_tick(server, parts):
    server.route("GET", "/n", handler=offset_api)
    walker = parts.walker(server.url("/n"), paginator=OffsetPaginator(limit=2), max_pages=2)
    outcome = walk(walker)
    assert outcome.ok and outcome.results == [[0, 1], [2, 3]]
    assert [m.headers["page"] for m in parts.messages] == [1, 2]
    walker.max_pages = 10  # an attribute, read at each tick
    assert walk(walker).results == [[0, 1], [2, 3], [4]]


def test_a_request_repeated_within_a_tick_ends_it_with_a_pagination_error(server, parts):
    server.route("GET", "/loop", headers={"Link": '</loop>; rel="next"'}, json=[1])

    class LinkBack:
        def first_params(self):
            return {}

        def next_request(self, page):
            return page.request  # the same request again: a loop

    walker = parts.walker(server.url("/loop"), paginator=LinkBack())
    outcome = walk(walker)
    assert not outcome.ok and isinstance(outcome.error, PaginationError)
    assert len(server.calls("/loop")) == 1 and [m.body for m in parts.messages] == [[1]]
    assert parts.errors == [outcome.error] and parts.records == [False]
    assert parts.stats["pagination_errors"] == 1


def events(req):
    since = dict(p.split("=") for p in req.query.split("&") if p).get("since", "0")
    return Reply(200, str([{"id": n} for n in range(int(since) + 1, int(since) + 3)]).replace("'", '"').encode(),
                 {"Content-Type": "application/json"})


def test_the_cursor_is_stored_under_the_key_only_after_every_item_went_through(server, parts):
    server.route("GET", "/events", handler=events)
    seen = []

    def fail_on_two(message):
        seen.append(message.body)
        if message.body["id"] == 2:
            raise ValueError("cannot store item 2")
        return message.body

    cursor = IncrementalCursor(field="id", param="since", initial=0)
    walker = parts.walker(server.url("/events"), cursor=cursor, data_extractor=lambda body: body,
                          process_message=fail_on_two)
    outcome = walk(walker, key="orders")
    assert not outcome.ok and isinstance(outcome.error, ValueError)
    assert seen == [{"id": 1}, {"id": 2}] and parts.state.get("orders") is None  # item 1 is sent again
    walker = parts.walker(server.url("/events"), cursor=cursor, data_extractor=lambda body: body)
    assert walk(walker, key="orders").ok and parts.state.get("orders") == 2
    assert walk(walker, key="orders").ok and parts.state.get("orders") == 4
    assert [c.query for c in server.calls("/events")] == ["since=0", "since=0", "since=2"]
    assert parts.state.get("walker-test") is None  # the key is the one the walk was given


class FakeTime:
    def __init__(self):
        self.now, self.waits = 0.0, []

    def clock(self):
        return self.now

    def wall(self):
        return 1_700_000_000.0 + self.now

    def wait(self, event, seconds):
        self.waits.append(seconds)
        self.now += seconds
        return event.is_set()


def test_a_host_whose_budget_resets_beyond_the_interval_is_not_called_and_the_tick_counts_neither_way(
        server, parts):
    server.route("GET", "/limited", headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "60"}, json=[])
    t = FakeTime()
    walker = parts.walker(server.url("/limited"), interval=10.0,
                          rate_limits=RateLimits(clock=t.clock, wall=t.wall, wait=t.wait))
    assert walk(walker).ok
    with LogCapture() as logs:
        outcome = walk(walker)
    assert outcome == PollOutcome(ok=True)
    assert len(server.calls("/limited")) == 1 and t.waits == []
    assert parts.records == [True]  # the skipped tick is neither success nor failure
    assert parts.stats["rate_limited_ticks"] == 1
    [line] = [line for line in logs.text.splitlines() if "rate limit spent" in line]
    assert " WARNING syncworkers.tests.walker: " in line and "worker=walker-test" in line  # the logger given


def test_a_near_reset_is_waited_for_on_the_stop_signal_which_ends_the_wait(server, parts):
    server.route("GET", "/limited", headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "5"}, json=[])
    t = FakeTime()
    walker = parts.walker(server.url("/limited"), interval=10.0,
                          rate_limits=RateLimits(clock=t.clock, wall=t.wall, wait=t.wait))
    walk(walker)
    assert walk(walker).ok and t.waits == [5.0] and len(server.calls("/limited")) == 2
    stop = StopSignal()
    stop.set()
    outcome = walk(walker, stop=stop)
    assert not outcome.ok and isinstance(outcome.error, RetryInterrupted)
    assert len(server.calls("/limited")) == 2


def test_no_response_goes_to_on_poll_error_and_records_a_failure(parts):
    walker = parts.walker(f"http://127.0.0.1:{closed_port()}/gone")
    outcome = walk(walker)
    assert not outcome.ok and isinstance(outcome.error, TransportError)
    assert parts.errors == [outcome.error] and parts.records == [False] and parts.messages == []
    assert parts.stats["errors"] == 1


def test_a_json_body_that_does_not_parse_is_delivered_as_text_with_a_warning(server, parts):
    server.route("GET", "/broken", body=b"{not json", headers={"Content-Type": "application/json"})
    with LogCapture() as logs:
        outcome = walk(parts.walker(server.url("/broken")))
    assert not outcome.ok and outcome.results == ["{not json"]  # delivered, but the poll failed
    assert (f"WARNING syncworkers.tests.walker: poll of {server.url('/broken')}: the body cannot be decoded "
            "(status 200: invalid JSON") in logs.text
    assert "; delivered as text, and the poll counts as failed" in logs.text


# -- the walker inside a PollerWorker ----------------------------------------------------------------


def test_a_pollers_request_attributes_are_its_walkers_read_and_set_through_either(server):
    server.route("GET", "/a", json=[])
    server.route("GET", "/b", json=[])
    poller = PollerWorker(server.url("/a"), interval=5, headers={"X-Team": "a"})
    try:
        assert poller.walker.url == poller.url == server.url("/a") and poller.interval == 5
        poller.url, poller.headers = server.url("/b"), {"X-Team": "b"}
        poller.walker.params = {"q": "1"}
        assert poller.params == {"q": "1"}
        poller.poll()
        [call] = server.calls("/b")
        assert call.header("X-Team") == "b" and call.query == "q=1" and server.calls("/a") == []
    finally:
        poller.close()


def test_a_renamed_poller_keeps_its_cursor_and_logs_under_the_new_name(server):
    server.route("GET", "/events", handler=events)
    broken = []

    def extract(body):
        if broken:
            raise ValueError("no items today")
        return body

    poller = PollerWorker(server.url("/events"), interval=5, name="orders",
                          cursor=IncrementalCursor(field="id", param="since", initial=0), data_extractor=extract)
    try:
        poller.name = "orders-eu"
        assert poller.poll().ok
        assert poller.state.get("orders-eu") == 2 and poller.state.get("orders") is None
        broken.append(True)
        with LogCapture() as logs:
            assert not poller.poll().ok
        [line] = [line for line in logs.text.splitlines() if "data_extractor raised" in line]
        assert "worker=orders-eu" in line  # logged by the walker, with the worker's current logger
    finally:
        poller.close()
