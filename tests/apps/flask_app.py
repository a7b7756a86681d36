"""A Flask app using syncworkers.contrib.flask, for the Flask and gunicorn tests (settings from SYNCWORKERS_* env)."""

import os

from flask import Flask, jsonify

from syncworkers.contrib.flask import SyncWorkers, webhook_receiver

from tests.apps.boot_workers import PidPoller  # noqa: F401  (SYNCWORKERS_WORKERS: tests.apps.flask_app:PidPoller)

sw = SyncWorkers()
RECEIVED = []


def create_app(**config):
    app = Flask(__name__)
    for key in ("OUTBOX_URL", "BASE_URL", "SIGNING_SECRET", "COORDINATION_URL"):
        if os.environ.get(f"APP_{key}"):
            app.config[f"SYNCWORKERS_{key}"] = os.environ[f"APP_{key}"]
    if os.environ.get("APP_WORKERS"):
        app.config["SYNCWORKERS_WORKERS"] = os.environ["APP_WORKERS"].split(",")
    app.config["SYNCWORKERS_AUTOSTART"] = os.environ.get("APP_AUTOSTART") == "1"
    app.config.update(config)
    sw.init_app(app)

    @app.post("/orders/<int:n>")
    def create_order(n):
        delivery_id = sw.sender.enqueue("/hooks/orders", {"order": n, "pid": os.getpid()})
        return jsonify(id=delivery_id, pid=os.getpid())

    @app.get("/pid")
    def pid():
        return jsonify(pid=os.getpid(), running=sw.state().running)

    @app.post("/hooks/in")
    @webhook_receiver(secret=lambda: app.config["RECEIVER_SECRET"])
    def receive(payload):
        RECEIVED.append(payload)
        return {"ok": True}

    return app
