"""RedisListConsumer against a real redis-server (tests/redis_server.py), never the default port."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from . import redis_server as helper
from .redis_server import RedisServer, require_redis_package

pytestmark = pytest.mark.transport_independent

require_redis_package()

import redis  # noqa: E402

from syncworkers.exceptions import ConfigError  # noqa: E402
from syncworkers.message import Message  # noqa: E402
from syncworkers.sources import RedisListConsumer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def url(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def client(url):
    c = redis.Redis.from_url(url)
    yield c
    c.close()


@pytest.fixture
def consumers(url):
    """make(**kw) builds consumers of one fresh queue; all are closed afterwards."""
    made = []
    queue = f"test-{uuid.uuid4().hex[:8]}"

    def make(**kw):
        kw.setdefault("block_timeout", 0.1)
        kw.setdefault("heartbeat_ttl", 5.0)
        consumer = RedisListConsumer(queue, url, **kw)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def take(source, n, timeout=10.0):
    """The next *n* messages of ``source.consume()``, or fewer if *timeout* passes."""
    got = []
    deadline = time.monotonic() + timeout
    gen = source.consume()
    try:
        while len(got) < n and time.monotonic() < deadline:
            # next() returns within block_timeout only once stopped, so bound it with a timer.
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), source.close)
            timer.name = "syncworkers-test-timeout"
            timer.start()
            try:
                got.append(next(gen))
            except StopIteration:
                break
            finally:
                timer.cancel()
                timer.join()
    finally:
        gen.close()
    return got


def test_push_consume_ack_empties_the_queue_and_the_processing_list(consumers):
    c = consumers()
    sent = Message(body={"order_id": 7}, headers={"event": "created"})
    assert c.push(sent) == sent.id
    second = c.push({"order_id": 8})
    assert c.pending() == 2

    first, other = take(c, 2)
    assert (first.id, first.body, first.headers, first.timestamp) == (
        sent.id, {"order_id": 7}, {"event": "created"}, sent.timestamp)
    assert (other.id, other.body) == (second, {"order_id": 8})
    assert c.pending() == 0
    assert c.processing() == 1  # asking for the second message acknowledged the first

    c.ack(first)
    c.ack(other)
    c.ack(other)  # a second ack is harmless
    assert c.processing() == 0
    assert c.pending() == 0
    assert c.dead() == []


def test_messages_are_consumed_oldest_first(consumers):
    c = consumers()
    for i in range(5):
        c.push(i)
    got = take(c, 5)
    assert [m.body for m in got] == [0, 1, 2, 3, 4]


def test_a_dead_consumers_message_is_recovered_by_another(consumers, client):
    a = consumers(consumer_id="a")
    b = consumers(consumer_id="b")
    pushed = a.push({"n": 1})
    [held] = take(a, 1)  # consumed, never acked: "a" dies holding it
    assert a.processing() == 1

    assert b.recover() == 0  # a's heartbeat is alive: its message is not taken
    client.delete(f"{a.queue}:consumer:a")  # a's heartbeat expires
    assert b.recover() == 1
    assert a.processing() == 0

    [again] = take(b, 1)
    assert (again.id, again.body) == (pushed, {"n": 1}) == (held.id, held.body)
    b.ack(again)
    assert b.processing() == 0 and b.pending() == 0
    a.ack(held)  # a late ack from the presumed-dead consumer removes nothing else
    assert b.dead() == []


def test_a_consumer_that_comes_back_during_recovery_keeps_its_messages(consumers, monkeypatch):
    a = consumers(consumer_id="a")
    b = consumers(consumer_id="b")
    a.push("mine")
    [held] = take(a, 1)
    # b saw a's heartbeat missing, and a refreshed it just after: the move must not happen.
    monkeypatch.setattr(b, "_dead_consumers", lambda: ["a"])
    assert b.recover() == 0
    assert a.processing() == 1 and a.pending() == 0
    a.ack(held)
    assert a.processing() == 0


def test_recover_never_takes_the_callers_own_messages(consumers, client):
    a = consumers(consumer_id="a")
    a.push("mine")
    [held] = take(a, 1)
    client.delete(f"{a.queue}:consumer:a")  # even with its own heartbeat gone
    assert a.recover() == 0
    assert a.processing() == 1
    a.ack(held)


def test_consume_recovers_periodically_while_running(consumers, client):
    a = consumers(consumer_id="a")
    b = consumers(consumer_id="b", heartbeat_ttl=1.0)  # recovers every second
    gen = b.consume()
    timer = threading.Timer(10, b.close)
    timer.name = "syncworkers-test-timeout"
    timer.start()
    try:
        a.push("first")
        assert next(gen).body == "first"
        a.push("held by a")
        take(a, 1)
        client.delete(f"{a.queue}:consumer:a")
        assert next(gen).body == "held by a"  # recovered by the running loop
    finally:
        timer.cancel()
        timer.join()
        gen.close()


VICTIM = """
import sys
from syncworkers.sources import RedisListConsumer
consumer = RedisListConsumer(sys.argv[1], sys.argv[2], consumer_id="victim", heartbeat_ttl=1.0,
                             block_timeout=0.1)
for message in consumer.consume():
    print(message.id, flush=True)
    sys.stdin.read()  # "processing" until killed (or until the test goes away)
"""


def test_a_consumer_killed_mid_processing_loses_nothing(consumers, url):
    b = consumers(consumer_id="survivor", heartbeat_ttl=1.0)
    pushed = b.push({"order": "42"})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, b.queue, url], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == pushed  # it holds the message now
        assert b.pending() == 0
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        victim.stdout.close()
        victim.stdin.close()

    [again] = take(b, 1)  # once the victim's heartbeat expires
    assert (again.id, again.body) == (pushed, {"order": "42"})
    b.ack(again)
    assert b.pending() == 0 and b.processing() == 0
    assert b._client.llen(f"{b.queue}:processing:victim") == 0


def test_a_restarted_consumer_with_the_same_id_takes_back_its_leftovers(consumers):
    first = consumers(consumer_id="fixed")
    pushed = first.push("x")
    take(first, 1)  # the process "restarts" before acking; its heartbeat is still alive
    restarted = consumers(consumer_id="fixed")
    [again] = take(restarted, 1)
    assert again.id == pushed
    restarted.ack(again)
    assert restarted.processing() == 0 and restarted.pending() == 0


def test_nack_requeues_until_max_deliveries_then_dead_letters(consumers):
    c = consumers(max_deliveries=3)
    pushed = c.push({"poison": True})
    c.push("next")
    bodies = []
    for _ in range(4):
        [message] = take(c, 1)
        bodies.append(message.body)
        if message.id == pushed:
            c.nack(message)
        else:
            c.ack(message)
    # Requeued at the end of the line: "next" is not held up behind the failing message.
    assert bodies == [{"poison": True}, "next", {"poison": True}, {"poison": True}]
    assert c.pending() == 0 and c.processing() == 0
    [dead] = c.dead()
    assert (dead.id, dead.body) == (pushed, {"poison": True})
    raw = json.loads(c._client.lindex(f"{c.queue}:dead", 0))
    assert raw["deliveries"] == 3


def test_nack_without_requeue_dead_letters_at_once(consumers):
    c = consumers()
    pushed = c.push("bad")
    [message] = take(c, 1)
    c.nack(message, requeue=False)
    assert c.pending() == 0 and c.processing() == 0
    assert [m.id for m in c.dead()] == [pushed]


def test_values_pushed_by_other_producers_become_message_bodies(consumers, client):
    c = consumers()
    values = [b'{"order": 1}', b"[1, 2]", b'"text"', b"42", b"not json", b"\xff\xfe"]
    for value in values:
        client.lpush(c.queue, value)
    got = take(c, len(values))
    assert [m.body for m in got[:5]] == [{"order": 1}, [1, 2], "text", 42, "not json"]
    assert isinstance(got[5].body, str)
    assert len({m.id for m in got}) == len(values)
    for message in got:
        c.ack(message)  # removes exactly the bytes that were popped
    assert c.processing() == 0


def test_a_nacked_plain_value_keeps_its_id_and_body(consumers, client):
    c = consumers()
    client.lpush(c.queue, b'{"id": 5, "body": "theirs"}')  # not our envelope
    [first] = take(c, 1)
    assert first.body == {"id": 5, "body": "theirs"}
    c.nack(first)
    [second] = take(c, 1)
    assert (second.id, second.body) == (first.id, {"id": 5, "body": "theirs"})


def test_close_ends_a_blocked_consume_promptly(consumers):
    c = consumers(block_timeout=0.5)
    c.push("one")
    got, arrived = [], threading.Event()

    def run():
        for message in c.consume():
            got.append(message)
            arrived.set()

    thread = threading.Thread(target=run, name="syncworkers-test-consumer", daemon=True)
    thread.start()
    assert arrived.wait(5)
    c.close()  # the thread is blocked in BLMOVE now
    thread.join(5)
    assert not thread.is_alive(), "consume() did not return after close()"
    assert [m.body for m in got] == ["one"]


def test_bind_ends_consume_with_the_workers_event(consumers):
    c = consumers()
    worker_stop = threading.Event()
    c.bind(worker_stop)
    thread = threading.Thread(target=lambda: list(c.consume()), name="syncworkers-test-consumer",
                              daemon=True)
    thread.start()
    worker_stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_password_in_the_url_stays_out_of_repr_and_errors(caplog):
    secret = "s3cret-" + uuid.uuid4().hex
    with RedisServer(password=secret) as srv:
        good = RedisListConsumer("q", srv.url, block_timeout=0.1)
        pushed = good.push("authenticated")
        assert [m.id for m in take(good, 1)] == [pushed]
        assert secret not in repr(good)
        assert f"127.0.0.1:{srv.port}" in repr(good)

        wrong = RedisListConsumer("q", srv.url.replace(secret, "wrong-" + secret), block_timeout=0.1)
        assert secret not in repr(wrong)
        with pytest.raises(redis.AuthenticationError) as info:
            next(wrong.consume())
        assert secret not in str(info.value)
        good.close()
        wrong.close()

    # Unreachable: consume() logs and keeps trying until closed.
    down = RedisListConsumer("q", srv.url, block_timeout=0.1)
    with caplog.at_level(logging.WARNING, logger="syncworkers"):
        assert take(down, 1, timeout=0.5) == []
    assert "unavailable" in caplog.text
    assert secret not in caplog.text


def test_redis_url_comes_from_the_environment(monkeypatch, url):
    monkeypatch.setenv("REDIS_URL", url)
    c = RedisListConsumer("q-env", block_timeout=0.1)
    try:
        pushed = c.push("via env")
        assert [m.id for m in take(c, 1)] == [pushed]
    finally:
        c.close()


@pytest.mark.parametrize("kw", [
    {"block_timeout": 0}, {"heartbeat_ttl": -1}, {"max_deliveries": 0},
    {"block_timeout": 2.0, "heartbeat_ttl": 1.0}, {"consumer_id": ""},
])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        RedisListConsumer("q", "redis://127.0.0.1:1/0", **kw)


@pytest.mark.parametrize("bad", ["http://:hunter22@127.0.0.1/0", "redis://:hunter22@127.0.0.1:port/0",
                                 "redis://:hunter22@127.0.0.1/0?socket_timeout=hunter22"])
def test_a_bad_url_is_refused_without_echoing_the_password(bad):
    with pytest.raises(ConfigError, match="invalid Redis URL") as info:
        RedisListConsumer("q", bad)
    assert "hunter22" not in str(info.value)


def test_push_refuses_a_body_that_is_not_json(consumers):
    c = consumers()
    with pytest.raises(TypeError, match="JSON"):
        c.push({"when": object()})
    assert c.pending() == 0


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "syncworkers.sources.redis")
    with pytest.raises(ImportError, match=r"pip install 'syncworkers\[redis\]'"):
        import syncworkers.sources.redis  # noqa: F401


def test_a_missing_redis_server_skips_locally_but_fails_on_ci(monkeypatch):
    monkeypatch.setattr(helper, "find_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        RedisServer().__enter__()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as info:  # a skip is a BaseException too: catch it to see it
        RedisServer().__enter__()
    assert info.type is pytest.fail.Exception


def test_the_heartbeat_is_refreshed_while_a_message_is_being_processed(consumers, client):
    a = consumers(consumer_id="slow", heartbeat_ttl=1.5)
    a.push({"n": 1})
    gen = a.consume()
    try:
        message = next(gen)  # "processing" starts: the loop does not ask for more meanwhile
        key = f"{a.queue}:consumer:slow"
        first = client.pttl(key)
        deadline = time.monotonic() + 10
        refreshed = False
        while time.monotonic() < deadline and not refreshed:
            time.sleep(0.05)
            ttl = client.pttl(key)
            refreshed = ttl > first + 100  # set again since: only the heartbeat thread can have
            first = min(first, ttl)
        assert refreshed
        assert client.exists(key) and a.processing() == 1
        a.ack(message)
    finally:
        a.close()
        gen.close()


@pytest.mark.transport_dependent
def test_run_once_of_a_relay_reports_an_unreachable_redis():
    from syncworkers import WebhookSenderWorker

    from .helpers import closed_port

    class Relay(WebhookSenderWorker):
        def __init__(self):
            super().__init__(base_url="http://127.0.0.1:9")
            self.source = RedisListConsumer("orders", f"redis://127.0.0.1:{closed_port()}/0", block_timeout=0.1)

    relay = Relay()
    try:
        cycle = relay.run_once()
        assert cycle.results == []
        assert cycle.ok is False  # `syncworkers run --once` exits 1, not 0
        assert relay.source.available is False
    finally:
        relay.close()
