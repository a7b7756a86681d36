"""The poller the boot tests run in web apps: it records which process started it (in PID_DIR)."""

import os

from syncworkers import PollerWorker


class PidPoller(PollerWorker):
    """Polls API_URL; its startup() writes PID_DIR/<pid>.started, so a test sees every process that started it."""

    def __init__(self):
        super().__init__(url=os.environ["API_URL"], interval=float(os.environ.get("API_INTERVAL", "60")),
                         name="pid-poller")

    def startup(self):
        folder = os.environ.get("PID_DIR")
        if folder:
            open(os.path.join(folder, f"{os.getpid()}.started"), "w").close()

    def process_message(self, message):
        pass
