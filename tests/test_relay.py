"""Relay built alone on a MemoryQueue: each message handled then settled, the loop job, run_once's drain;
and what run_once() sees of a sender subclass's own process() and process_message()."""

import threading
import time

import pytest

from syncworkers import Message, WebhookConfig, WebhookSenderWorker
from syncworkers.exceptions import DeliveryError
from syncworkers.observability.logging import get_logger
from syncworkers.observability.metrics import Metrics
from syncworkers.signals import StopSignal
from syncworkers.sources import MemoryQueue
from syncworkers.workers.relay import Relay, counted

from .helpers import Clock, LogCapture, wait_for

LOGGER = get_logger("syncworkers.tests.relay")
#: The drain's quiet period. Its clock is the test's own and stands still until the test moves it,
#: so a drain is quiet only when the test says so; the period only sets how often it looks.
IDLE = 0.05


class Handler:
    """A process_message of a test's own: records each body; *fail* says which raise (and how)."""

    def __init__(self, fail=lambda body, seen: None):
        self.seen = []
        self.fail = fail

    @counted
    def __call__(self, message):
        self.seen.append(message.body)
        error = self.fail(message.body, self.seen.count(message.body))
        if error is not None:
            raise error
        return message.body * 10


def relay_of(handler, run=None):
    run = run or StopSignal()
    stats = Metrics()
    relay = Relay(handler, lambda: run, logger=LOGGER, stats=stats, join_timeout=5, idle_seconds=IDLE,
                  clock=Clock(0.0))
    return relay, run, stats


def drain(relay, source, process, settled=None):
    """relay.drain() on a thread: once *settled()* (default: the source settled every message), the
    quiet period passes; return what the drain returned."""
    answer = []
    thread = threading.Thread(target=lambda: answer.append(relay.drain(source, process, "syncworkers-once-test")),
                              name="test-drain")
    thread.start()
    try:
        assert wait_for(settled or (lambda: source.join(timeout=0)))  # time stands still: not quiet yet
    finally:
        relay.clock.now += IDLE
        thread.join(10)
    assert not thread.is_alive()
    return answer[0]


def consume_in_thread(relay, source):
    thread = threading.Thread(target=relay.consume, args=(source,), name="syncworkers-test-consume")
    thread.start()
    return thread


def test_each_message_is_handled_then_acked_and_one_that_raises_is_requeued():
    handler = Handler(fail=lambda body, n: RuntimeError("transient") if body == 2 and n == 1 else None)
    relay, run, stats = relay_of(handler)
    source = MemoryQueue()
    source.bind(run)
    for n in (1, 2, 3):
        source.put(n)
    with LogCapture() as logs:
        thread = consume_in_thread(relay, source)
        try:
            assert source.join(timeout=5)  # every message settled: acked, the failed one after its retry
        finally:
            run.set()
            thread.join(5)
    assert handler.seen == [1, 2, 3, 2]  # requeued at the end of the queue, then handled
    assert (stats["messages_processed"], stats["messages_failed"]) == (3, 1)
    assert "process_message raised on message " in logs.text and "RuntimeError: transient; the message is requeued" in logs.text


def test_a_delivery_error_during_stop_is_a_message_handed_back_not_an_error():
    run = StopSignal()

    def fail(body, n):
        run.set()  # the worker stops while this message is being delivered
        return DeliveryError("delivery interrupted by stop: interrupted")

    relay, _, stats = relay_of(Handler(fail), run)
    source = MemoryQueue()
    message = source.put({"n": 1})
    with LogCapture() as logs:
        source.bind(run)
        thread = consume_in_thread(relay, source)
        thread.join(5)
    assert not thread.is_alive()
    assert "requeued: its delivery was interrupted by stop()" in logs.text
    assert "ERROR" not in logs.text and stats["messages_failed"] == 0
    source.bind(threading.Event())
    assert next(source.consume()).id == message.id  # back in the queue


def test_the_loop_job_binds_the_source_and_idles_until_stopped_when_process_returns():
    relay, run, _ = relay_of(Handler())
    source = MemoryQueue()
    returned = threading.Event()

    def process():  # the reference's `pass`
        returned.set()

    thread = threading.Thread(target=relay.loop, args=(source, process, run), name="syncworkers-test-loop")
    thread.start()
    try:
        assert returned.wait(5)
        assert thread.is_alive()  # idles rather than ends or spins
        assert source.stop_event is run  # consume() now ends with the run
    finally:
        run.set()
        thread.join(5)
    assert not thread.is_alive()


def test_the_drain_returns_the_results_once_the_source_is_quiet():
    handler = Handler()
    relay, _, _ = relay_of(handler)
    source = MemoryQueue()
    for n in (1, 2, 3):
        source.put(n)
    assert drain(relay, source, lambda: relay.consume(source)) == ([10, 20, 30], None)


def test_the_drain_waits_for_a_message_in_hand_however_long_it_takes():
    """A message taking longer than the quiet period is not quiet: the next one is still relayed."""
    release = threading.Event()
    handler = Handler(fail=lambda body, n: release.wait(10) and None if body == 1 else None)
    relay, _, _ = relay_of(handler)
    source = MemoryQueue()
    source.put(1)
    source.put(2)

    def first_outlasts_the_quiet_period():
        if handler.seen == [1] and not release.is_set():
            relay.clock.now += 10 * IDLE  # while message 1 is in hand
            # A drain that took this for quiet would end within IDLE (it looks that often); this one must
            # not, however long it is given. (The pause only makes a wrong drain likely to show.)
            time.sleep(4 * IDLE)
            release.set()
        return source.join(timeout=0)

    assert drain(relay, source, lambda: relay.consume(source), first_outlasts_the_quiet_period) == ([10, 20], None)


def test_the_drain_says_why_a_cycle_failed():
    source = MemoryQueue()
    source.put(1)
    relay, _, _ = relay_of(Handler(fail=lambda body, n: RuntimeError("no route") if n == 1 else None))
    # Requeued, then handled: the cycle is still not ok.
    assert drain(relay, source, lambda: relay.consume(source)) == ([10], "process_message raised")

    def broken():
        raise RuntimeError("loop broke")

    with LogCapture() as logs:
        assert relay.drain(None, broken, "syncworkers-once-test") == ([], "process() raised")
    assert "process() raised during run_once" in logs.text

    class Unreachable(MemoryQueue):
        available = False

    assert relay.drain(Unreachable(), lambda: None, "syncworkers-once-test") == ([], "the source was unreachable")


def test_a_process_that_never_returns_is_reported_and_left_running():
    release = threading.Event()
    relay, _, _ = relay_of(Handler())
    relay.join_timeout = 0.05
    try:
        with LogCapture() as logs:
            results, failed = drain(relay, None, lambda: release.wait(10), settled=lambda: True)
        assert failed == "process() did not return" and "left running" in logs.text
    finally:
        release.set()


def test_only_calls_on_the_drains_thread_count_and_a_nested_call_counts_once():
    class Outer(Handler):
        @counted
        def __call__(self, message):
            return super().__call__(message) + 1  # a subclass calling the handler it overrides

    handler = Outer()
    relay, _, _ = relay_of(handler)
    source = MemoryQueue()
    source.put(1)
    elsewhere = []

    def process():
        side = threading.Thread(target=lambda: elsewhere.append(handler(Message(body=5))))
        side.start()  # another thread's call is not this cycle's
        side.join()
        relay.consume(source)

    assert drain(relay, source, process) == ([11], None)
    assert elsewhere == [51]


# -- run_once() of a sender whose subclass brings its own loop ------------------------------


class OwnLoop(WebhookSenderWorker):
    """The reference's relay: a process() of its own that calls process_message, and routes itself."""

    def __init__(self, base_url):
        super().__init__(base_url, WebhookConfig(max_retries=0))
        self.source = MemoryQueue()

    def process(self):
        for message in self.source.consume():
            self.process_message(message)

    def process_message(self, message):
        return {"sent": self.send_webhook("/events", message.body), "n": message.body["n"]}


def run_once(worker):
    """worker.run_once() on a thread, its relay's time standing still until the source settled every message."""
    worker.relay.idle_seconds, worker.relay.clock = IDLE, Clock(0.0)
    cycles = []
    once = threading.Thread(target=lambda: cycles.append(worker.run_once()), name="test-run-once")
    once.start()
    try:
        assert worker.source.join(timeout=10)  # each handled, then settled when its loop asked for the next
    finally:
        worker.relay.clock.now += IDLE
        once.join(10)
    assert not once.is_alive()
    return cycles[0]


def test_run_once_sees_what_a_subclasss_own_loop_hands_its_process_message(server):
    server.route("POST", "/events", status=200)
    worker = OwnLoop(server.base_url)
    try:
        for n in range(3):
            worker.source.put({"n": n})
        cycle = run_once(worker)
    finally:
        worker.close()
    assert cycle.ok and cycle.results == [{"sent": True, "n": n} for n in range(3)]
    assert sorted(r.json()["n"] for r in server.calls("/events")) == [0, 1, 2]


def test_run_once_of_a_subclass_whose_process_message_raises_is_not_ok(server):
    class Broken(OwnLoop):
        def process_message(self, message):
            raise RuntimeError("cannot route this message")

    worker = Broken(server.base_url)
    worker.relay.clock = Clock(0.0)  # never quiet: the cycle ends because process() raised
    try:
        worker.source.put({"n": 1})
        cycle = worker.run_once()
    finally:
        worker.close()
    assert not cycle.ok and cycle.error == "process_message raised"



@pytest.mark.parametrize("kind", [staticmethod, classmethod])
def test_a_process_message_that_is_a_static_or_class_method_is_seen_too(kind):
    class Static(WebhookSenderWorker):
        process_message = kind(lambda *args: args[-1].body["n"] * 2)

    worker = Static("http://127.0.0.1:9")
    worker.source = MemoryQueue()
    try:
        worker.source.put({"n": 21})
        cycle = run_once(worker)
    finally:
        worker.close()
    assert cycle.ok and cycle.results == [42] and worker.source.join(timeout=0)
