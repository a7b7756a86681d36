"""A Flask app using syncworkers.contrib.flask, for the Flask and gunicorn tests (settings from SYNCWORKERS_* env)."""

import os

from flask import Flask, jsonify

from syncworkers import PollerWorker
from syncworkers.contrib.flask import SyncWorkers, webhook_receiver

sw = SyncWorkers()
RECEIVED = []


class PidPoller(PollerWorker):
    """Polls API_URL; its startup() records which process started it (in PID_DIR)."""

    def __init__(self):
        super().__init__(url=os.environ["API_URL"], interval=float(os.environ.get("API_INTERVAL", "60")),
                         name="pid-poller")

    def startup(self):
        folder = os.environ.get("PID_DIR")
        if folder:
            open(os.path.join(folder, f"{os.getpid()}.started"), "w").close()

    def process_message(self, message):
        pass


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
