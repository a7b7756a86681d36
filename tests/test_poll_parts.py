"""The pure parts of a poll: what a polled body becomes, and how polls add up to a poller's health."""

from datetime import datetime, timedelta, timezone

import pytest

from syncworkers.polling.bodies import as_items, decode_body, records
from syncworkers.polling.health import PollHealth

pytestmark = pytest.mark.transport_independent


@pytest.mark.parametrize("content, content_type, expected", [
    (b'{"a": 1}', "application/json", {"a": 1}),
    (b'[1, 2]', "application/problem+json; charset=utf-8", [1, 2]),
    (b"caf\xe9", "text/plain; charset=ISO-8859-1", "café"),
    (b"caf\xc3\xa9", "text/plain; charset=no-such-charset", "café"),  # unknown charset: UTF-8
    (b"caf\xc3\xa9", "", "café"),
    (b"", "application/json", None),
])
def test_a_body_is_json_for_a_json_type_else_text_and_none_when_empty(content, content_type, expected):
    assert decode_body(content, content_type) == (expected, None)


def test_broken_json_is_delivered_as_text_with_the_parse_error():
    body, error = decode_body(b"{not json", "application/json")
    assert body == "{not json" and isinstance(error, ValueError)


@pytest.mark.parametrize("content, content_type, text, reason", [
    (b"[" * 5000 + b"]" * 5000, "application/json", "[" * 5000 + "]" * 5000, "JSON nested deeper than"),
    (b'"caf\xe9"', "application/json", '"caf\ufffd"', "not valid utf-8"),
    (b"caf\xe9", "text/csv", "caf\ufffd", "not valid utf-8"),
    (b"caf\x81", "text/plain; charset=windows-1252", "caf\ufffd", "not valid cp1252"),
])
def test_a_body_not_decodable_as_its_type_says_is_replaced_text_with_the_reason(content, content_type, text,
                                                                                 reason):
    body, error = decode_body(content, content_type)
    assert body == text and isinstance(error, ValueError) and reason in str(error)


@pytest.mark.parametrize("content, content_type, expected", [
    ('{"a": "caf\u00e9"}'.encode("latin-1"), "application/json; charset=latin-1", {"a": "caf\u00e9"}),
    ('[1]'.encode("utf-16"), "application/json", [1]),  # RFC 8259 detection of UTF-16
    (b"\xef\xbb\xbf[1]", "application/json; charset=utf-8", [1]),  # a BOM
    (b"\x89PNG\xff", "image/png", "\ufffdPNG\ufffd"),  # not a text type: replaced, not an error
    (b"caf\xc3\xa9", "text/plain; charset=base64", "caf\u00e9"),  # not a text encoding: UTF-8
    (b"caf\xc3\xa9", "text/plain; charset=utf\x00", "caf\u00e9"),  # not a name at all
])
def test_declared_charsets_and_other_types_decode_without_error(content, content_type, expected):
    assert decode_body(content, content_type) == (expected, None)


def test_an_extractors_list_tuple_or_iterator_is_many_items_anything_else_one():
    assert as_items([1, 2]) == [1, 2] and as_items((1, 2)) == [1, 2] and as_items(iter([1, 2])) == [1, 2]
    assert as_items({"a": 1}) == [{"a": 1}] and as_items(None) == [None]


def test_a_cursor_looks_at_each_item_and_inside_items_that_are_arrays():
    assert records([{"id": 1}, [{"id": 2}, {"id": 3}]]) == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert records(None) == []


def test_poll_health_counts_failures_in_a_row_until_a_success_stamped_with_the_given_time():
    times = iter([datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=n) for n in range(3)])
    health = PollHealth(now=lambda: next(times))
    assert health.snapshot() == (None, 0)
    health.record(False)
    health.record(False)
    assert health.consecutive_failures == 2 and health.snapshot() == (None, 2)
    health.record(True)
    assert health.snapshot() == (datetime(2025, 1, 1, tzinfo=timezone.utc), 0)
    health.record(False)
    health.record(True)
    assert health.snapshot() == (datetime(2025, 1, 1, 0, 1, tzinfo=timezone.utc), 0)
