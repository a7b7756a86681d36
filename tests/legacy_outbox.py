"""Outbox files as earlier versions of syncworkers made them: the schema of versions 1 and 2, whose
tables had bare names (``deliveries``, ``attempts``, ``endpoints``), copied verbatim, and rows as
their stores wrote them. A file or a database made so must open with every delivery in it.
"""

import json
import sqlite3

#: Schema version 1, as ``_MIGRATIONS[0]`` of the SQLite store had it.
SCHEMA_V1 = """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        url TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        owner TEXT,
        lease_until REAL,
        delivered_at REAL
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_updated ON deliveries (state, updated_at);
"""

#: What version 2 added (``_MIGRATIONS[1]``; its Python step named the endpoints of older rows).
SCHEMA_V2 = """
        ALTER TABLE deliveries ADD COLUMN target TEXT;
        CREATE INDEX deliveries_target ON deliveries (target, state);
        CREATE TABLE attempts (
            delivery_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            at REAL NOT NULL,
            duration REAL NOT NULL,
            kind TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            body BLOB NOT NULL,
            PRIMARY KEY (delivery_id, n)
        );
        CREATE TABLE endpoints (
            target TEXT PRIMARY KEY,
            disabled_at REAL,
            reason TEXT,
            failing_since REAL,
            last_failure_at REAL,
            last_status INTEGER
        );
"""

T0 = 1_000_000.0
GOOD = "http://127.0.0.1:9/hooks/orders"
GONE = "http://127.0.0.1:9/hooks/gone"

#: The deliveries of :func:`fill_v2`: id -> (url, state, attempts, last_status).
DELIVERIES = {
    "msg_pending": (GOOD, "pending", 0, None),
    "msg_retrying": (GOOD, "pending", 2, 503),
    "msg_in_flight": (GOOD, "in_flight", 1, None),
    "msg_delivered": (GOOD, "delivered", 1, 200),
    "msg_dead": (GOOD, "dead", 8, 500),
    "msg_held": (GONE, "held", 0, None),
    "msg_gone": (GONE, "dead", 1, 410),
}


def fill_v2(conn: sqlite3.Connection) -> None:
    """Version 2's tables (on *conn*'s database) with a delivery in every state, attempt logs and a
    disabled endpoint, as the version-2 store wrote them; ``user_version`` 2."""
    conn.executescript(SCHEMA_V1 + SCHEMA_V2)
    for n, (id, (url, state, attempts, status)) in enumerate(DELIVERIES.items()):
        target = url.split("://", 1)[1]
        in_flight = state == "in_flight"
        conn.execute(
            "INSERT INTO deliveries (id, endpoint, url, body, headers, state, attempts, next_attempt_at, created_at,"
            " updated_at, last_status, last_error, owner, lease_until, delivered_at, target)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id, "/hooks/" + url.rsplit("/", 1)[1], url, json.dumps({"n": n}).encode(),
             json.dumps({"X-Trace": f"t{n}"}), state, attempts, T0 + n, T0 + n, T0 + n, status,
             f"status {status}" if status and status >= 400 else None, "old-host:1:ab" if in_flight else None,
             T0 + 10 if in_flight else None, T0 + n if state == "delivered" else None, target))
        for k in range(1, attempts + 1):
            conn.execute("INSERT INTO attempts (delivery_id, n, at, duration, kind, status, error, body)"
                         " VALUES (?, ?, ?, 0.1, ?, ?, ?, ?)",
                         (id, k, T0 + k, "success" if status == 200 else "retryable", status,
                          None if status == 200 else f"status {status}", b"answer"))
    conn.execute("INSERT INTO endpoints (target, disabled_at, reason, failing_since, last_failure_at, last_status)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (GONE.split("://", 1)[1], T0, "status 410 Gone", T0, T0, 410))
    conn.execute("PRAGMA user_version=2")
    conn.commit()
