"""Paginators: the pure next-request math, and whole ticks against a loopback API that pages."""

import json
from urllib.parse import parse_qs

import pytest

from syncworkers import (
    ConfigError,
    CursorPaginator,
    HTTPClientConfig,
    LinkHeaderPaginator,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    PageRequest,
    PaginationError,
    PollerWorker,
    RateLimits,
)
from syncworkers.polling.pagination import first_request, next_link

from .test_poller import Recorder
from .server import Reply

ITEMS = [{"id": i} for i in range(1, 8)]  # 7 items: pages of 3 end with a short page of 1


def page(request, body=None, items=None, headers=None, url=""):
    return Page(request=request, status=200, headers=headers or {}, body=body, items=items, url=url)


def query(req):
    return {k: v[-1] for k, v in parse_qs(req.query).items()}


def reply_json(body, headers=None):
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})


class Collector(Recorder):
    """A Recorder with a rate-limit budget of its own (pages of one test never meet another's)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rate_limits", RateLimits())
        super().__init__(*args, **kwargs)


# -- pure ------------------------------------------------------------------------


def test_link_header_next_resolves_relative_links_against_the_page_url():
    headers = {"Link": '</items?page=2>; rel="next", <https://127.0.0.1:1/items?page=9>; rel="last"'}
    assert next_link(headers, "http://127.0.0.1:8000/api/items?page=1") == "http://127.0.0.1:8000/items?page=2"
    assert next_link({"link": '<p3>; rel="prev next"'}, "http://h/a/b") == "http://h/a/p3"
    assert next_link({"Link": '</x>; rel="last"'}, "http://h/") is None
    paginator = LinkHeaderPaginator()
    req = PageRequest("http://h/items", (("q", "1"),))
    assert paginator.next_request(page(req, headers=headers, url="http://h/items?q=1")) == PageRequest(
        "http://h/items?page=2")
    assert paginator.next_request(page(req, headers=headers, items=[])) is None  # an empty page ends it


def test_link_header_to_another_origin_is_refused():
    req = PageRequest("http://127.0.0.1:1/items")
    other = page(req, headers={"Link": '<http://example.invalid/steal>; rel="next"'}, url=req.url)
    with pytest.raises(PaginationError):
        LinkHeaderPaginator().next_request(other)
    assert LinkHeaderPaginator(same_origin=False).next_request(other).url == "http://example.invalid/steal"


def test_cursor_paginator_reads_a_json_path_or_a_header():
    req = first_request("http://h/items", {"q": "x"}, {})
    body = {"data": [1], "meta": {"next_cursor": "abc"}}
    nxt = CursorPaginator().next_request(page(req, body=body, items=[1]))
    assert nxt.params == (("q", "x"), ("cursor", "abc"))
    again = CursorPaginator().next_request(page(nxt, body={"data": [2], "meta": {"next_cursor": "def"}}, items=[2]))
    assert again.params == (("q", "x"), ("cursor", "def"))  # replaced, not appended
    for end in ({"meta": {"next_cursor": None}}, {"meta": {"next_cursor": ""}}, {"meta": {}}, {}):
        assert CursorPaginator().next_request(page(req, body=end, items=[1])) is None
    assert CursorPaginator().next_request(page(req, body=body, items=[])) is None
    by_header = CursorPaginator(cursor_header="X-Next-Cursor", param="after")
    assert by_header.next_request(page(req, headers={"x-next-cursor": "7"}, items=[1])).param("after") == "7"
    assert by_header.next_request(page(req, headers={}, items=[1])) is None


def test_offset_paginator_advances_by_items_and_stops_on_a_short_or_empty_page():
    paginator = OffsetPaginator(limit=3)
    req = first_request("http://h/items", None, paginator.first_params())
    assert req.params == (("limit", "3"), ("offset", "0"))
    second = paginator.next_request(page(req, items=[1, 2, 3]))
    assert second.param("offset") == "3" and second.param("limit") == "3"
    assert paginator.next_request(page(second, items=[4, 5])) is None  # short
    assert paginator.next_request(page(second, items=[])) is None  # empty
    assert paginator.next_request(page(second, items=None)) is None  # unknown: stop rather than guess


def test_page_number_paginator():
    paginator = PageNumberPaginator(start=1)
    req = first_request("http://h/items", [("q", "a")], paginator.first_params())
    assert req.params == (("q", "a"), ("page", "1"))
    assert paginator.next_request(page(req, items=[1])).param("page") == "2"
    assert paginator.next_request(page(req, items=[])) is None
    sized = PageNumberPaginator(param="p", start=0, page_size=2, page_size_param="per_page")
    req = first_request("http://h/items", None, sized.first_params())
    assert dict(req.params) == {"p": "0", "per_page": "2"}
    assert sized.next_request(page(req, items=[1])) is None  # short


@pytest.mark.parametrize("make", [
    lambda: OffsetPaginator(limit=0),
    lambda: OffsetPaginator(limit_param=""),
    lambda: PageNumberPaginator(start=-1),
    lambda: PageNumberPaginator(page_size_param="per_page"),
    lambda: CursorPaginator(cursor_path=None),
])
def test_bad_paginator_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_poller_rejects_bad_pagination_arguments():
    with pytest.raises(ConfigError, match="paginator"):
        PollerWorker("http://127.0.0.1:1/x", interval=1, paginator=object())
    with pytest.raises(ConfigError, match="max_pages"):
        PollerWorker("http://127.0.0.1:1/x", interval=1, paginator=OffsetPaginator(), max_pages=0)


# -- against a loopback API ----------------------------------------------------------


def serve_offset(req):
    q = query(req)
    offset, limit = int(q.get("offset", 0)), int(q.get("limit", 100))
    return reply_json({"data": ITEMS[offset:offset + limit]})


def test_offset_pages_each_item_once_and_stops_on_the_short_last_page(server):
    server.route("GET", "/items", handler=serve_offset)
    worker = Collector(server.url("/items"), interval=60, params={"kind": "all"},
                       paginator=OffsetPaginator(limit=3), data_extractor=lambda body: body["data"])
    outcome = worker.poll()
    assert outcome.ok and outcome.messages == 7
    assert [m.body["id"] for m in worker.messages] == list(range(1, 8))
    assert [query(r) for r in server.calls("/items")] == [
        {"kind": "all", "limit": "3", "offset": str(o)} for o in (0, 3, 6)]
    assert [m.headers["page"] for m in worker.messages] == [1, 1, 1, 2, 2, 2, 3]
    worker.close()


def test_offset_pages_stop_on_an_empty_page_when_the_count_divides(server):
    server.route("GET", "/items", handler=lambda req: reply_json(
        ITEMS[:6][int(query(req)["offset"]):int(query(req)["offset"]) + 3]))
    worker = Collector(server.url("/items"), interval=60, paginator=OffsetPaginator(limit=3))
    assert worker.poll().ok
    assert [query(r)["offset"] for r in server.calls("/items")] == ["0", "3", "6"]
    # Without data_extractor a JSON array body is one message per page and its items count.
    assert [len(m.body) for m in worker.messages] == [3, 3, 0]
    worker.close()


def test_page_numbers_until_an_empty_page(server):
    pages = {"1": [1, 2], "2": [3], "3": []}
    server.route("GET", "/p", handler=lambda req: reply_json({"results": pages[query(req)["page"]]}))
    worker = Collector(server.url("/p"), interval=60, paginator=PageNumberPaginator(),
                       data_extractor=lambda body: body["results"])
    assert worker.poll().ok
    assert [m.body for m in worker.messages] == [1, 2, 3]
    assert [query(r)["page"] for r in server.calls("/p")] == ["1", "2", "3"]
    worker.close()


def test_link_header_pages_with_relative_links(server):
    def handler(req):
        n = int(query(req).get("page", 1))
        headers = {"Link": f'</api/events?page={n + 1}&token=t>; rel="next"'} if n < 3 else {}
        return reply_json([{"n": n}], headers)

    server.route("GET", "/api/events", handler=handler)
    worker = Collector(server.url("/api/events"), interval=60, paginator=LinkHeaderPaginator(),
                       data_extractor=lambda body: body)
    assert worker.poll().ok
    assert [m.body["n"] for m in worker.messages] == [1, 2, 3]
    assert [r.query for r in server.calls("/api/events")] == ["", "page=2&token=t", "page=3&token=t"]
    worker.close()


def test_cursor_pages_from_the_body_and_from_a_header(server):
    chain = {None: ("a", [1]), "a": ("b", [2]), "b": (None, [3])}

    def by_body(req):
        nxt, data = chain[query(req).get("cursor")]
        return reply_json({"data": data, "meta": {"next_cursor": nxt}})

    def by_header(req):
        nxt, data = chain[query(req).get("after")]
        return reply_json(data, {"X-Next": nxt} if nxt else {})

    server.route("GET", "/body", handler=by_body)
    server.route("GET", "/header", handler=by_header)
    body_worker = Collector(server.url("/body"), interval=60, paginator=CursorPaginator(),
                            data_extractor=lambda body: body["data"])
    header_worker = Collector(server.url("/header"), interval=60, data_extractor=lambda body: body,
                              paginator=CursorPaginator(cursor_header="X-Next", param="after"))
    for worker in (body_worker, header_worker):
        assert worker.poll().ok
        assert [m.body for m in worker.messages] == [1, 2, 3]
        worker.close()
    assert [query(r).get("cursor") for r in server.calls("/body")] == [None, "a", "b"]


def test_a_cursor_that_repeats_ends_the_tick_with_an_error_and_keeps_what_was_processed(server):
    chain = {None: "a", "a": "b", "b": "a"}  # the API sends the walk back to an earlier page
    server.route("GET", "/loop", handler=lambda req: reply_json(
        {"data": [query(req).get("cursor")], "meta": {"next_cursor": chain[query(req).get("cursor")]}}))
    worker = Collector(server.url("/loop"), interval=60, paginator=CursorPaginator(),
                       data_extractor=lambda body: body["data"])
    outcome = worker.poll()
    assert not outcome.ok and isinstance(outcome.error, PaginationError)
    assert [m.body for m in worker.messages] == [None, "a", "b"]  # processed before the loop was seen
    assert len(server.calls("/loop")) == 3  # the repeated page is never requested
    assert worker.errors == [outcome.error] and "loop" in str(outcome.error)
    metrics = worker.health()["metrics"]
    assert metrics["pagination_errors"] == 1 and metrics["errors"] == 1
    assert worker.poll().messages == 3  # the next tick walks again
    worker.close()


def test_a_link_that_points_back_is_a_loop(server):
    server.route("GET", "/l", handler=lambda req: reply_json([1], {"Link": '</l?page=2>; rel="next"'}))
    worker = Collector(server.url("/l"), interval=60, paginator=LinkHeaderPaginator())
    outcome = worker.poll()
    assert isinstance(outcome.error, PaginationError) and len(server.calls("/l")) == 2
    worker.close()


def test_max_pages_caps_a_tick(server):
    server.route("GET", "/many", handler=lambda req: reply_json([query(req)["page"]]))  # never ends
    worker = Collector(server.url("/many"), interval=60, paginator=PageNumberPaginator(), max_pages=4)
    assert worker.poll().ok
    assert [m.body for m in worker.messages] == [["1"], ["2"], ["3"], ["4"]]
    worker.close()


def test_a_failing_page_ends_the_tick_with_on_poll_error_keeping_what_was_processed(server):
    def handler(req):
        if query(req)["page"] == "3":
            return Reply(fault="close")
        return reply_json([int(query(req)["page"])])

    server.route("GET", "/flaky", handler=handler)
    worker = Collector(server.url("/flaky"), interval=60, paginator=PageNumberPaginator(),
                       data_extractor=lambda body: body, http_config=HTTPClientConfig(max_retries=0))
    outcome = worker.poll()
    assert not outcome.ok and outcome.results == [1, 2]
    assert len(worker.errors) == 1 and worker.errors[0] is outcome.error
    assert worker.health()["metrics"]["errors"] == 1
    worker.close()


def test_an_error_status_mid_walk_is_delivered_and_ends_the_walk(server):
    server.route("GET", "/s", handler=lambda req: reply_json([1]) if query(req)["page"] == "1"
                 else Reply(404, b'{"error": "gone"}', {"Content-Type": "application/json"}))
    worker = Collector(server.url("/s"), interval=60, paginator=PageNumberPaginator(),
                       data_extractor=lambda body: body)
    outcome = worker.poll()
    assert outcome.status_code == 404 and len(server.calls("/s")) == 2
    assert [(m.headers["status_code"], m.body) for m in worker.messages] == [(200, 1), (404, {"error": "gone"})]
    worker.close()


@pytest.mark.parametrize("value, expected", [
    ('<https://api/x?page=2>; rel="next", <https://api/x?page=9>; rel="last"',
     [("https://api/x?page=2", {"rel": "next"}), ("https://api/x?page=9", {"rel": "last"})]),
    ("</p3>;rel=next", [("/p3", {"rel": "next"})]),
    ('<a>; title="x, y"; rel="prev next"', [("a", {"title": "x, y", "rel": "prev next"})]),
    ("", []),
])
def test_link_headers_are_parsed_as_rfc_8288_says(value, expected):
    from syncworkers.polling.pagination import parse_links

    assert parse_links(value) == expected
