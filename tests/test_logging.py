"""Structured logging: the reference document's calls, text and JSON lines, secret redaction."""

import io
import itertools
import json
import logging
import re
import secrets
import sys

import pytest

import syncworkers.observability.logging as slog
from syncworkers.exceptions import ConfigError
from syncworkers.observability.logging import (
    JSONFormatter,
    StructuredLogger,
    TextFormatter,
    configure_logging,
    get_logger,
    Redactor,
    redact,
    redact_headers,
)

pytestmark = pytest.mark.transport_independent

_names = itertools.count()


class ListHandler(logging.Handler):
    """Keeps records and what a plain stdlib formatter makes of them (as a user's handler would)."""

    def __init__(self):
        super().__init__()
        self.records = []
        self.lines = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record):
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def package_logger():
    """The "syncworkers" stdlib logger, restored (handlers and level) after the test."""
    logger = logging.getLogger("syncworkers")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


@pytest.fixture
def configured(package_logger):
    """configure_logging(fmt) onto a fresh StringIO; returns (logger, stream)."""

    def configure(fmt, level="DEBUG", redactor=None):
        stream = io.StringIO()
        configure_logging(level, fmt, stream)
        return get_logger(f"syncworkers.poller{next(_names)}", redactor=redactor), stream

    return configure


@pytest.fixture
def plain():
    """A StructuredLogger whose stdlib logger has only a plain ListHandler."""
    logger = logging.getLogger(f"syncworkers.test{next(_names)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    yield StructuredLogger(logger), handler
    logger.removeHandler(handler)


def reference_calls(log):
    """The calls the reference document makes, in the order it makes them."""
    log.info(f"Processed payment {'pay_1'} with status {'completed'}")
    log.info("Processing API response", url="https://api.example.com/metrics", status_code=200,
             response_size=12, metrics={"a": 1})
    try:
        raise ValueError("handler blew up")
    except ValueError as e:
        log.error("Error processing API response", error=str(e), metrics={"errors_count": 1},
                  exc_info=True)
    log.warning(f"Unknown event type: {'order.odd'}")
    log.critical("Critical webhook failed after all retries", data={"id": 7, "note": "two words"})
    log.info("Alert broadcast completed: 2/4 successful", results={"/a": True, "/b": False},
             alert_type="x")


# -- formats -----------------------------------------------------------------


def test_text_format_has_timestamp_level_logger_message_and_fields():
    record = logging.LogRecord("syncworkers.poller", logging.INFO, __file__, 1, "msg", (), None)
    record.created, record.msecs = 1767225600.123, 123.0  # 2026-01-01T00:00:00.123Z
    record.__dict__.update({"event": "value", "note": "a b", "n": 3, "d": {"a": 1}, "empty": ""})

    line = TextFormatter().format(record)

    assert line == ("2026-01-01T00:00:00.123Z INFO syncworkers.poller: msg "
                    "event=value note='a b' n=3 d={\"a\":1} empty=''")


def test_reference_calls_in_text_format(configured):
    log, stream = configured("text")

    reference_calls(log)

    lines = stream.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(stamp + rf" INFO {log.name}: Processed payment pay_1 with status completed",
                        lines[0])
    assert lines[1].endswith("Processing API response url=https://api.example.com/metrics "
                             'status_code=200 response_size=12 metrics={"a":1}')
    assert " ERROR " in lines[2]
    assert lines[2].endswith("Error processing API response error='handler blew up' "
                             'metrics={"errors_count":1}')
    assert lines[3] == "Traceback (most recent call last):"
    assert "ValueError: handler blew up" in lines
    rest = lines[lines.index("ValueError: handler blew up") + 1:]
    assert " WARNING " in rest[0] and rest[0].endswith("Unknown event type: order.odd")
    assert " CRITICAL " in rest[1]
    assert rest[1].endswith("""data='{"id":7,"note":"two words"}'""")
    assert rest[2].endswith('Alert broadcast completed: 2/4 successful '
                            'results={"/a":true,"/b":false} alert_type=x')
    assert len(rest) == 3


def test_reference_calls_in_json_format(configured):
    log, stream = configured("json")

    reference_calls(log)

    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["level"] for o in objs] == ["INFO", "INFO", "ERROR", "WARNING", "CRITICAL", "INFO"]
    assert all(o["logger"] == log.name and re.fullmatch(r"\d{4}-.*T.*\.\d{3}Z", o["ts"]) for o in objs)
    assert objs[0]["msg"] == "Processed payment pay_1 with status completed"
    assert objs[1] == {**objs[1], "msg": "Processing API response", "status_code": 200,
                       "url": "https://api.example.com/metrics", "response_size": 12,
                       "metrics": {"a": 1}}
    assert objs[2]["error"] == "handler blew up"
    assert objs[2]["exc"].startswith("Traceback (most recent call last):")
    assert objs[2]["exc"].endswith("ValueError: handler blew up")
    assert objs[4]["data"] == {"id": 7, "note": "two words"}
    assert objs[5]["results"] == {"/a": True, "/b": False} and objs[5]["alert_type"] == "x"
    assert [o for o in objs if "exc" in o] == [objs[2]]


def test_json_is_one_valid_object_per_line_whatever_the_values(configured):
    log, stream = configured("json")

    class Unprintable:
        def __str__(self):
            raise RuntimeError("no str")

        __repr__ = __str__

    cycle = {"name": "loop"}
    cycle["self"] = cycle
    log.info("two\nlines", obj=Unprintable(), nan=float("nan"), tuple_dict={(1, 2): 3},
             cycle=cycle, data=b"bytes", items={1, 2})

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["msg"] == "two\nlines"
    assert obj["obj"] == "<unprintable Unprintable>"
    assert obj["nan"] == "nan"
    assert obj["tuple_dict"] == "{(1, 2): 3}"
    assert obj["cycle"] == {"name": "loop", "self": "<recursion>"}
    assert obj["data"] == "b'bytes'" and obj["items"] == "{1, 2}"


def test_field_names_that_are_record_attributes_are_kept_as_prefixed_attributes(configured, plain):
    log, handler = plain
    log.info("hello", name="n", msg="m", args=(1,), message="x", levelname="L", exc_info=None, plain=1)

    record = handler.records[0]
    assert record.getMessage() == "hello" and record.levelname == "INFO" and record.name == log.name
    assert (record.field_name, record.field_msg, record.field_args, record.field_message, record.field_levelname,
            record.plain) == ("n", "m", (1,), "x", "L", 1)

    log, stream = configured("json")
    log.info("hello", msg="m", level=3, ts="t", logger="l")
    obj = json.loads(stream.getvalue())
    assert obj["msg"] == "hello" and obj["level"] == "INFO" and obj["logger"] == log.name
    assert (obj["field_msg"], obj["field_level"], obj["field_ts"], obj["field_logger"]) == ("m", 3, "t", "l")


def test_percent_args_are_formatted(plain):
    log, handler = plain

    log.warning("polled %s in %d ms", "/items", 12, url="u")
    log.info("%(a)s-%(b)s", {"a": 1, "b": 2})
    log.info("bad %d", "not a number")  # a broken call still leaves a line

    assert [r.getMessage() for r in handler.records] == [
        "polled /items in 12 ms", "1-2", "bad %d ('not a number',)"]


def test_exc_info_outside_an_except_block_logs_without_traceback(configured):
    log, stream = configured("json")

    log.error("no exception here", exc_info=True)
    log.exception("nor here")

    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["msg"] for o in objs] == ["no exception here", "nor here"]
    assert not any("exc" in o for o in objs)


def test_exception_and_exc_info_instance_carry_the_traceback(plain):
    log, handler = plain
    try:
        {}["missing"]
    except KeyError as exc:
        log.exception("lookup failed", key="missing")
        caught = exc
    log.error("later", exc_info=caught)

    for record in handler.records:
        assert record.levelno == logging.ERROR
        assert record.exc_info[1] is caught
    assert all("KeyError: 'missing'" in line for line in handler.lines)


def test_stack_info_is_added(configured):
    log, stream = configured("text")

    log.info("where am I", stack_info=True)

    out = stream.getvalue()
    assert "Stack (most recent call last):" in out
    assert "test_stack_info_is_added" in out


def test_caller_location_is_the_callers_line_not_logging_py(plain):
    log, handler = plain

    def helper():
        log.info("from helper", stacklevel=2)

    log.info("direct"); line = sys._getframe().f_lineno  # noqa: E702
    log.log(logging.INFO, "via log"); log_line = sys._getframe().f_lineno  # noqa: E702
    helper(); helper_line = sys._getframe().f_lineno  # noqa: E702

    where = [(r.pathname, r.funcName, r.lineno) for r in handler.records]
    me = "test_caller_location_is_the_callers_line_not_logging_py"
    assert where == [(__file__, me, line), (__file__, me, log_line), (__file__, me, helper_line)]


def test_bind_adds_context_without_changing_the_original(plain):
    log, handler = plain

    bound = log.bind(worker="poller-1", url="https://a")
    bound.info("tick", url="https://b", n=1)
    log.info("plain")

    assert (handler.records[0].worker, handler.records[0].url, handler.records[0].n) == ("poller-1", "https://b", 1)
    assert not hasattr(handler.records[1], "worker")
    assert bound.name == log.name and bound.logger is log.logger


def test_get_logger_defaults_to_the_package_logger():
    log = get_logger(worker="w")

    assert log.name == "syncworkers" and log.logger is logging.getLogger("syncworkers")
    assert log.context == {"worker": "w"}


# -- secrets -------------------------------------------------------------------


def test_secrets_appear_nowhere(configured, plain):
    registered = "reg-" + secrets.token_hex(12)
    redactor = Redactor([registered])  # what a worker's logger is given: the secrets its owner configured
    bearer = "eyJhbGciOi.J9" + secrets.token_hex(8)
    api_key = "ak_live_" + secrets.token_hex(8)
    whsec = "whsec_" + secrets.token_hex(16)
    leaks = (registered, bearer, api_key, whsec, whsec[6:])

    class Credentials:
        def __repr__(self):
            return f"Credentials({registered!r})"

    def log_everything(log):
        log.info(f"calling with Authorization: Bearer {bearer} and {registered}",
                 headers={"Authorization": f"Bearer {bearer}", "X-API-Key": api_key},
                 api_key=api_key, note=f"secret is {registered}", nested=[{"password": api_key}],
                 url=f"https://api.example.com/x?api_key={api_key}", sessions={registered: "alice"})
        log.bind(webhook_secret=whsec).info("signing", config=(f"key {whsec}",), creds=Credentials())
        try:
            # Unregistered credentials are caught by their shape: "Bearer x", "api_key=x", "whsec_x".
            raise PermissionError(f"rejected Bearer {bearer}, api_key={api_key}, {registered}, {whsec}")
        except PermissionError:
            log.error("request failed", exc_info=True)

    outputs = []
    for fmt in ("text", "json"):
        log, stream = configured(fmt, redactor=redactor)
        log_everything(log)
        outputs.append(stream.getvalue())
    json_lines = [json.loads(line) for line in outputs[1].splitlines()]
    assert json_lines[0]["headers"] == {"Authorization": "***", "X-API-Key": "***"}
    log, handler = plain
    log = StructuredLogger(log.logger, redactor=redactor)
    log_everything(log)
    # The record's attributes are what any formatter prints (python-json-logger, structlog): objects
    # there are their masked text already.
    dumps = [r.getMessage() + json.dumps(slog._record_fields(r)) + (r.exc_text or "") for r in handler.records]

    assert len(handler.records) == 3 and "PermissionError: rejected" in handler.lines[2]
    assert all("***" in text for text in outputs + dumps)  # the lines were written, masked
    for text in outputs + dumps + handler.lines:
        for leak in leaks:
            assert leak not in text


def test_redact_masks_secret_keys_at_any_depth():
    original = {
        "Authorization": "Bearer abc",
        "HEADERS": {"X-Api-Key": "k1", "Cookie": "c=1", "Accept": "application/json"},
        "client_secret": "s", "refresh_token": "t", "DB_PASSWORD": "p", "passwd": "p2",
        "webhook-signature": "v1,xyz", "items": [{"apikey": "k2"}, ("Bearer Abc123def", 3)],
        "count": 3, "obj": None,
    }
    marker = object()
    original["thing"] = marker

    out = redact(original)

    assert out == {
        "Authorization": "***",
        "HEADERS": {"X-Api-Key": "***", "Cookie": "***", "Accept": "application/json"},
        "client_secret": "***", "refresh_token": "***", "DB_PASSWORD": "***", "passwd": "***",
        "webhook-signature": "***", "items": [{"apikey": "***"}, ("Bearer ***", 3)],
        "count": 3, "obj": None, "thing": marker,
    }
    assert out["thing"] is marker
    assert original["HEADERS"]["X-Api-Key"] == "k1"  # the caller's data is not modified


def test_redact_masks_patterns_in_strings():
    assert redact("Authorization: Basic dXNlcjpwYXNzd29yZA==") == "Authorization: ***"
    assert redact("sent Basic dXNlcjpwYXNzd29yZA== and bearer Abc.123") == "sent Basic *** and bearer ***"
    assert redact("key whsec_dW5yZWdpc3RlcmVkIHNoYXBlIG9ubHk ok") == "key whsec_*** ok"
    assert redact("GET /x?page=2&access_token=abc123&q=1") == "GET /x?page=2&access_token=***&q=1"
    assert redact("https://user:pw@host/p") == "https://***@host/p"
    # Prose keeps its words: only credentials are masked.
    assert redact("Using Basic authentication; bearer token missing") == \
        "Using Basic authentication; bearer token missing"
    # A mapping printed into the message (an f-string of headers, a dict's repr or JSON).
    assert redact(str({"X-API-Key": "k-123456", "Authorization": "Token t-654321", "page": "2"})) == \
        "{'X-API-Key': '***', 'Authorization': '***', 'page': '2'}"
    assert redact('{"password": "it\\"s-me", "user": "ann"}') == '{"password": "***", "user": "ann"}'


def test_redact_headers():
    headers = {"Authorization": "Bearer abc", "x-api-key": "k", "Set-Cookie": "s=1",
               "Content-Type": "application/json", "X-Note": "see Bearer Zyx987"}

    assert redact_headers(headers) == {
        "Authorization": "***", "x-api-key": "***", "Set-Cookie": "***",
        "Content-Type": "application/json", "X-Note": "see Bearer ***"}


def test_a_redactor_ignores_empty_and_short_values():
    redactor = Redactor()
    for value in (None, "", b"", "abc"):
        redactor.add_secret(value)
    token = secrets.token_hex(8)
    redactor.add_secret(token.encode())

    assert redactor.text(f"abc {token}") == "abc ***"
    assert redact(f"abc {token}") == f"abc {token}"  # the rule alone knows no registered value


def test_a_logger_masks_with_its_own_redactor_only(configured):
    mine, theirs = "mine-" + secrets.token_hex(8), "theirs-" + secrets.token_hex(8)
    log, stream = configured("text", redactor=Redactor([mine]))
    bound = log.bind(worker="w")  # a bound logger keeps the redactor

    bound.info(f"saw {mine} and {theirs}", note=f"again {mine}")
    line = stream.getvalue()
    assert mine not in line and line.count("***") == 2
    assert theirs in line  # another owner's secret is that owner's logger's to mask


# -- configuration and cost ---------------------------------------------------


def test_configure_logging_is_idempotent(package_logger):
    own = logging.NullHandler()
    package_logger.addHandler(own)  # a user's handler is left alone
    before = len(package_logger.handlers)
    first, second = io.StringIO(), io.StringIO()

    configure_logging("info", "text", first)
    handler = configure_logging("debug", "json", second)
    get_logger("syncworkers.x").debug("hello")

    assert len(package_logger.handlers) == before + 1
    assert handler in package_logger.handlers and own in package_logger.handlers
    assert package_logger.level == logging.DEBUG
    assert first.getvalue() == "" and json.loads(second.getvalue())["msg"] == "hello"


@pytest.mark.parametrize("level, fmt", [("INFO", "xml"), ("LOUD", "text")])
def test_configure_logging_rejects_unknown_values(package_logger, level, fmt):
    before = list(package_logger.handlers)

    with pytest.raises(ConfigError, match="xml|LOUD"):
        configure_logging(level, fmt)

    assert package_logger.handlers == before


def test_disabled_level_does_no_work(plain, monkeypatch):
    log, handler = plain
    log.logger.setLevel(logging.WARNING)
    touched = []

    class Explosive:
        def __repr__(self):
            touched.append("repr")
            raise AssertionError("touched")

        __str__ = __repr__

    def no_redaction(value):
        raise AssertionError("redacted at a disabled level")

    monkeypatch.setattr(slog, "redact", no_redaction)
    monkeypatch.setattr(slog, "redact_text", no_redaction)

    log.debug(Explosive(), Explosive(), field=Explosive())
    log.info("x %s", Explosive(), field=Explosive(), exc_info=True)
    log.bind(ctx=Explosive()).info("y")

    assert touched == [] and handler.records == []
    assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.ERROR)


def test_formatters_never_raise_on_records_from_plain_loggers():
    record = logging.LogRecord("other", logging.INFO, __file__, 1, "bad %d", ("x",), None)
    record.custom = "token=abc123"  # stdlib extra= attributes are shown as fields, redacted

    text = TextFormatter().format(record)
    obj = json.loads(JSONFormatter().format(record))

    assert text.endswith("other: bad %d ('x',) custom='token=***'")
    assert obj["msg"] == "bad %d ('x',)" and obj["custom"] == "token=***"


# -- sentences and record attributes ---------------------------------------------------------------


def test_placeholders_make_the_sentence_and_the_text_format_does_not_repeat_them(configured, plain):
    log, handler = plain
    log.bind(worker="w").warning("webhook {delivery_id} to {url} failed: {error}; retry in {retry_in}s, 100% {other}",
                                 delivery_id="msg_1", url="http://h/x", error="status 503", retry_in=30.0,
                                 status_code=503)
    record = handler.records[0]
    assert record.getMessage() == "webhook msg_1 to http://h/x failed: status 503; retry in 30s, 100% {other}"
    assert (record.delivery_id, record.url, record.retry_in, record.status_code, record.worker) == (
        "msg_1", "http://h/x", 30.0, 503, "w")
    assert record.msg.startswith("webhook %(delivery_id)s to %(url)s")  # a template: tools group by it

    text_log, stream = configured("text")
    text_log.bind(worker="w").warning("webhook {delivery_id} failed: {error}", delivery_id="msg_1",
                                      error="boom", status_code=None, attempts=2)
    assert stream.getvalue().rstrip("\n").endswith(": webhook msg_1 failed: boom worker=w status_code=None attempts=2")


def test_a_credential_split_between_message_and_field_is_masked_in_the_sentence(plain):
    log, handler = plain
    log.info("calling with token={value}", value="abc123")
    log.info("key {name}", name="Bearer abcdef123456")

    assert [r.getMessage() for r in handler.records] == ["calling with token=***", "key Bearer ***"]
    assert handler.records[1].name == log.name and handler.records[1].field_name == "Bearer ***"
