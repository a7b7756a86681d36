import queue
import threading

import pytest

from syncworkers.message import Message
from syncworkers.sources import MemoryQueue, Source

pytestmark = pytest.mark.transport_independent


def consume_in_thread(source, got, first=None):
    """Run ``for m in source.consume()`` in a thread; *first* is set when a message arrives."""

    def run():
        for message in source.consume():
            got.append(message)
            if first is not None:
                first.set()

    thread = threading.Thread(target=run, name="syncworkers-test-consumer", daemon=True)
    thread.start()
    return thread


def take(source, n):
    """The next *n* messages of ``source.consume()``."""
    gen = source.consume()
    try:
        return [next(gen) for _ in range(n)]
    finally:
        gen.close()


def test_messages_come_out_in_the_order_they_were_put():
    q = MemoryQueue()
    for i in range(5):
        q.put({"n": i})
    assert q.qsize() == 5
    assert [m.body for m in take(q, 5)] == [{"n": i} for i in range(5)]
    assert q.qsize() == 0


def test_a_message_is_queued_as_is_and_anything_else_is_wrapped():
    q = MemoryQueue()
    original = Message(body={"order": 1}, headers={"x": "y"})
    assert q.put(original) is original
    wrapped = q.put("plain text")
    assert isinstance(wrapped, Message) and wrapped.body == "plain text"
    first, second = take(q, 2)
    assert first is original
    assert second is wrapped


def test_iterating_the_source_consumes_it():
    q = MemoryQueue()
    q.put(1)
    q.put(2)
    got = []
    for message in q:
        got.append(message.body)
        if len(got) == 2:
            q.close()
    assert got == [1, 2]


def test_close_from_another_thread_ends_a_blocked_consume():
    q = MemoryQueue()
    got, arrived = [], threading.Event()
    thread = consume_in_thread(q, got, arrived)
    q.put("hello")
    assert arrived.wait(5)
    # The consumer is now blocked waiting on an empty queue.
    q.close()
    thread.join(2)
    assert not thread.is_alive(), "consume() did not return after close()"
    assert [m.body for m in got] == ["hello"]


def test_bind_shares_the_workers_stop_event():
    q = MemoryQueue()
    worker_stop = threading.Event()
    q.bind(worker_stop)
    assert q.stop_event is worker_stop
    got, arrived = [], threading.Event()
    thread = consume_in_thread(q, got, arrived)
    q.put("x")
    assert arrived.wait(5)
    worker_stop.set()
    thread.join(2)
    assert not thread.is_alive(), "consume() ignored the bound stop event"


def test_close_sets_the_bound_event():
    q = MemoryQueue()
    worker_stop = threading.Event()
    q.bind(worker_stop)
    q.close()
    assert worker_stop.is_set()


def test_join_waits_for_every_message_to_be_settled():
    q = MemoryQueue()
    q.put("a")
    q.put("b")
    assert q.join(timeout=0.05) is False  # nothing consumed yet
    a, b = take(q, 2)
    q.ack(a)
    assert q.join(timeout=0.05) is False  # b is still in flight
    q.ack(a)  # a second ack of the same message changes nothing
    assert q.join(timeout=0.05) is False

    result = []
    waiter = threading.Thread(target=lambda: result.append(q.join(timeout=10)),
                              name="syncworkers-test-join")
    waiter.start()
    q.nack(b, requeue=False)
    waiter.join(5)
    assert result == [True]
    assert q.join(timeout=0) is True


def test_join_of_an_empty_queue_is_true_at_once():
    assert MemoryQueue().join(timeout=0) is True


def test_nack_requeues_at_the_end_and_keeps_the_message_unfinished():
    q = MemoryQueue()
    for body in ("a", "b", "c"):
        q.put(body)
    a = take(q, 1)[0]
    q.nack(a)
    assert q.join(timeout=0) is False
    again = take(q, 3)
    assert [m.body for m in again] == ["b", "c", "a"]
    assert again[2] is a
    for message in again:
        q.ack(message)
    assert q.join(timeout=0) is True


def test_nack_requeues_even_when_the_queue_is_full():
    q = MemoryQueue(maxsize=1)
    q.put("a")
    a = take(q, 1)[0]
    q.put("b")  # the queue is full again
    q.nack(a)  # must neither block nor lose a
    assert [m.body for m in take(q, 2)] == ["b", "a"]


def test_put_on_a_full_queue_times_out():
    q = MemoryQueue(maxsize=1)
    q.put("a")
    with pytest.raises(queue.Full):
        q.put("b", timeout=0.05)
    assert q.qsize() == 1
    only = take(q, 1)[0]
    q.ack(only)
    assert q.join(timeout=0) is True  # the refused put is not counted as unfinished


def test_a_put_waiting_for_room_gives_up_when_the_source_closes():
    q = MemoryQueue(maxsize=1)
    q.put("a")
    errors = []

    def producer():
        try:
            q.put("b")  # no timeout: waits for room
        except queue.Full as exc:
            errors.append(exc)

    thread = threading.Thread(target=producer, name="syncworkers-test-producer", daemon=True)
    thread.start()
    q.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1


def test_the_base_source_settles_nothing_and_stops_on_close():
    source = Source()
    with pytest.raises(NotImplementedError):
        next(iter(source))
    source.ack(Message(body=1))
    source.nack(Message(body=1))
    with source:
        pass
    assert source.stop_event.is_set()


def test_a_loop_that_never_acks_settles_each_message_by_asking_for_the_next():
    q = MemoryQueue()
    for n in range(3):
        q.put(n)
    seen = []
    for message in q.consume():  # the reference relay's loop: no ack() anywhere
        seen.append(message.body)
        if len(seen) == 3:
            break
    assert seen == [0, 1, 2]
    assert not q.join(timeout=0.05)  # the last one was never followed by a request for more
    q.put(3)
    gen = q.consume()
    assert next(gen).body == 3
    assert not q.join(timeout=0.05)
    q.close()
    assert list(gen) == []  # resuming settles message 3, then the closed queue ends the loop
    q2 = MemoryQueue()
    assert q2.join(timeout=0.05)


def test_the_runs_stop_signal_wakes_a_blocked_consume_and_put_without_polling(monkeypatch):
    import syncworkers.sources.memory as memory
    from syncworkers.signals import StopSignal

    monkeypatch.setattr(memory, "STOP_CHECK_INTERVAL", 3600.0)  # a poll would hang the test
    source = MemoryQueue(maxsize=1)
    run = StopSignal()
    source.bind(run)
    source.put("fills it")
    got = []
    putter_done = threading.Event()

    def put_more():
        with pytest.raises(queue.Full):
            source.put("no room")
        putter_done.set()

    putter = threading.Thread(target=put_more, name="syncworkers-test-putter", daemon=True)
    idle = MemoryQueue()
    idle.bind(run)
    blocked = consume_in_thread(idle, got)
    putter.start()
    run.set()
    blocked.join(5)
    putter.join(5)
    assert not blocked.is_alive() and putter_done.is_set()
