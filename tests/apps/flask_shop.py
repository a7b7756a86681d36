"""A Flask shop written the Flask-SQLAlchemy way: one database session per request, committed by the view and
rolled back at teardown when the view did not, the order's webhook enqueued on the session's own connection.

The shop's database is the outbox's (a SQLite file, or PostgreSQL): an order and its webhook commit together,
or neither does (``?fail=1`` refuses the payment after both were written).
"""

import sqlite3
from contextlib import closing

from flask import Flask, current_app, g, request

from syncworkers.contrib.flask import SyncWorkers

sw = SyncWorkers()


class PaymentRefused(Exception):
    pass


def connect(url):
    """A DB-API connection to *url* (``sqlite:///path`` or ``postgresql://``), in a transaction of its own."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url[len("sqlite:///"):], timeout=30)
    import psycopg

    return psycopg.connect(url)


def session():
    """This request's database connection (opened on first use), as ``db.session`` is."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE_URL"])
    return g.db


def placeholder(conn):
    return "?" if isinstance(conn, sqlite3.Connection) else "%s"


def create_app(database_url, partner_url):
    app = Flask(__name__)
    app.config.update(DATABASE_URL=database_url, SYNCWORKERS_OUTBOX_URL=database_url,
                      SYNCWORKERS_BASE_URL=partner_url)
    sw.init_app(app)
    with app.app_context():
        sw.sender.outbox.counts()  # the outbox's tables exist before the first request writes to them
    with closing(connect(database_url)) as conn:
        conn.cursor().execute("CREATE TABLE IF NOT EXISTS orders (number INTEGER)")
        conn.commit()

    @app.teardown_appcontext
    def end_session(exc):
        conn = g.pop("db", None)
        if conn is not None:
            conn.rollback()  # what the view did not commit
            conn.close()

    @app.errorhandler(PaymentRefused)
    def refused(exc):
        return {"ok": False}, 402

    @app.post("/orders/<int:n>")
    def create_order(n):
        db = session()
        db.cursor().execute(f"INSERT INTO orders (number) VALUES ({placeholder(db)})", (n,))
        delivery_id = sw.sender.enqueue("/hooks/orders", {"order": n}, connection=db)
        if request.args.get("fail"):
            raise PaymentRefused()
        db.commit()
        return {"id": delivery_id}

    @app.post("/orders/<int:n>/shipped")
    def ship(n):
        return {"sent": sw.sender.send_webhook("/hooks/shipped", {"order": n})}

    @app.get("/orders")
    def orders():
        cursor = session().cursor()
        cursor.execute("SELECT number FROM orders ORDER BY number")
        return {"orders": [row[0] for row in cursor.fetchall()]}

    return app
