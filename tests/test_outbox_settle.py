"""Outcomes recorded in batches: one ``settle()`` call, one statement (one transaction), many deliveries.

Every rule of a single outcome holds per row of a batch, on both stores (a SQLite file,
a fresh PostgreSQL namespace): the states and the schedule, the attempt log, the lease
guard (a delivery another owner took over is not overwritten), endpoint health with
auto-disable and held deliveries, and an id the store does not hold.
"""

from __future__ import annotations

import pytest

from syncworkers.outbox import DEAD, DELIVERED, IN_FLIGHT, PENDING, open_outbox
from syncworkers.outbox.health import EndpointHealth, observe, observe_all
from syncworkers.outbox.store import HELD, Attempt, Settlement

from .helpers import LogCapture

pytestmark = pytest.mark.transport_independent

T0 = 1_000_000.0
DAY = 86400.0


def attempt(status, kind, at=T0):
    return Attempt(at=at, duration=0.1, kind=kind, status=status, error=None if status < 300 else f"status {status}",
                   body=b"answer %d" % status)


@pytest.fixture
def boxes(location, clock):
    """Two owners of one outbox: A records, B takes over what A's lease lost."""
    with open_outbox(location, clock=clock, owner="A", lease_seconds=10) as a, \
            open_outbox(location, clock=clock, owner="B", lease_seconds=10) as b:
        yield a, b


def test_a_batch_settles_each_row_by_its_own_outcome_and_guard(boxes, clock):
    a, b = boxes
    url = "http://127.0.0.1:9/hooks/{}"
    ids = {name: a.add(name, url.format(name), b"{}") for name in ("ok", "retry", "dead", "late", "gone")}
    ids["other"] = a.add("gone", url.format("gone"), b"{}")  # the same endpoint as "gone"
    assert len(a.claim_due(10)) == 6
    clock.now += 11  # A's leases lapse; B takes over "late" (and hands the rest back)
    taken = b.claim_due(10)
    b.release([d.id for d in taken if d.id != ids["late"]])
    for d in a.claim_due(10):  # A claims the others again
        assert d.id != ids["late"]
    at = clock.now
    batch = [
        Settlement(ids["ok"], DELIVERED, 200, attempt=attempt(200, "success", at), now=at),
        Settlement(ids["retry"], PENDING, 503, "status 503", at + 60, True, attempt(503, "retryable", at), at),
        Settlement(ids["dead"], DEAD, 400, "refused: status 400", attempt=attempt(400, "refused", at), now=at),
        Settlement(ids["late"], PENDING, 500, "status 500", at + 60, True, attempt(500, "retryable", at), at),
        Settlement(ids["gone"], DEAD, 410, "gone: status 410", attempt=attempt(410, "gone", at), now=at),
        Settlement("msg_unknown", DELIVERED, 200, attempt=attempt(200, "success", at), now=at),
    ]
    with LogCapture() as logs:
        assert a.settle(batch, disable_after=5 * DAY) == ["msg_unknown"]
    got = {name: a.get(id) for name, id in ids.items()}
    assert (got["ok"].state, got["ok"].attempts, got["ok"].delivered_at, got["ok"].owner) == (DELIVERED, 1, at, None)
    assert (got["retry"].state, got["retry"].attempts, got["retry"].next_attempt_at) == (PENDING, 1, at + 60)
    assert (got["retry"].last_status, got["retry"].last_error) == (503, "status 503")
    assert (got["dead"].state, got["dead"].last_error) == (DEAD, "refused: status 400")
    # B holds "late" now: A's outcome is not B's to lose, and is said to be ignored ...
    assert (got["late"].state, got["late"].owner, got["late"].attempts) == (IN_FLIGHT, "B", 0)
    assert f"delivery {ids['late']} is no longer claimed by this owner" in logs.text
    # ... but the attempt was made: it is in the log, and its endpoint saw it fail.
    assert [x.status for x in a.attempts(ids["late"])] == [500]
    assert [x.status for x in a.attempts(ids["ok"])] == [200] and a.attempts(ids["ok"])[0].body == b"answer 200"
    # 410 disables its endpoint: "gone" is dead, the other pending delivery to it is held.
    assert got["gone"].state == DEAD and got["other"].state == IN_FLIGHT  # A still holds "other" ...
    a.settle([Settlement(ids["other"], PENDING, 500, "status 500", at + 60, True, attempt(503, "retryable", at),
                         at)])
    assert a.get(ids["other"]).state == HELD  # ... and its retry is held: its endpoint is disabled
    health = {e.endpoint: e for e in a.endpoints()}
    assert health["127.0.0.1:9/hooks/gone"].reason == "status 410 Gone"
    assert health["127.0.0.1:9/hooks/late"].failing_since == at


def test_one_batch_disables_an_endpoint_after_disable_after_and_holds_what_waits_for_it(boxes, clock):
    a, _ = boxes
    url = "http://127.0.0.1:9/hooks/flaky"
    first, second, waiting = (a.add("flaky", url, b"{}") for _ in range(3))
    a.claim_due(10)
    a.release([waiting])
    start = clock.now
    # Two failures of one endpoint in one batch, a day apart: the second is the one that disables it.
    a.settle([Settlement(first, PENDING, 500, "status 500", start + 60, True, attempt(500, "retryable", start),
                         start),
              Settlement(second, PENDING, 500, "status 500", start + 60, True,
                         attempt(500, "retryable", start + DAY), start + DAY)], disable_after=DAY)
    [health] = a.endpoints()
    assert health.failing_since == start and health.last_failure_at == start + DAY and not health.enabled
    assert {a.get(id).state for id in (first, second, waiting)} == {HELD}
    assert a.counts()["held"] == 3


def test_a_batch_without_attempts_postpones_without_touching_the_log_or_the_endpoints(boxes, clock):
    a, _ = boxes
    id = a.add("e", "http://127.0.0.1:9/hooks/busy", b"{}")
    a.claim_due(1)
    a.settle([Settlement(id, PENDING, None, "host saturated", clock.now + 0.5, False, None, clock.now)])
    got = a.get(id)
    assert (got.state, got.attempts, got.next_attempt_at) == (PENDING, 0, clock.now + 0.5)
    assert a.attempts(id) == [] and a.endpoints() == []


def test_the_attempt_log_keeps_its_size_when_a_batch_adds_to_it(boxes, clock):
    from syncworkers.outbox.health import ATTEMPT_LOG_SIZE

    a, _ = boxes
    id = a.add("e", "http://127.0.0.1:9/hooks/log", b"{}")
    for n in range(ATTEMPT_LOG_SIZE + 2):
        a.claim_due(1, now=clock.now + n)
        a.settle([Settlement(id, PENDING, 503, "status 503", clock.now + n, True,
                             attempt(503, "retryable", clock.now + n), clock.now + n)])
    log = a.attempts(id)
    assert len(log) == ATTEMPT_LOG_SIZE and log[-1].at == clock.now + ATTEMPT_LOG_SIZE + 1


# -- the fold over a batch (pure) ----------------------------------------------------------------------


def test_the_health_of_a_batch_is_that_of_its_attempts_recorded_one_by_one():
    attempts = [("a", "retryable", 500, T0), ("b", "success", 200, T0 + 1), ("c", "retryable", 503, T0 + 2),
                ("d", "interrupted", None, T0 + 3), ("e", "gone", 410, T0 + 4), ("f", "retryable", 500, T0 + 5)]
    health = EndpointHealth("h/p")
    for _, kind, status, at in attempts:
        health = observe(health, kind, status, at, DAY)
    seen = observe_all(EndpointHealth("h/p"), attempts, DAY)
    assert seen.after == health and not health.enabled
    assert seen.disabled and seen.hold == ("f",)  # "e" disabled it; "f" was attempted while it was
    assert seen.counted == 5  # an interrupted attempt says nothing about the endpoint
    quiet = observe_all(EndpointHealth("h/p"), [("a", "success", 200, T0)], DAY)
    assert quiet.quiet(stored=True) and not quiet.quiet(stored=False)  # a new endpoint gets its row
