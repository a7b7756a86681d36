"""Workers that the CLI tests load as module:Worker targets (URLs come from POLLER_URL)."""

import os

from syncworkers import PollerWorker, WebhookSenderWorker

RESULTS = []


class GoodPoller(PollerWorker):
    """Polls POLLER_URL; records each body."""

    def process_message(self, message):
        RESULTS.append(message.body)
        return message.headers["status_code"]


class BrokenPoller(PollerWorker):
    def process_message(self, message):
        raise RuntimeError("cannot handle this body")


class NotAWorker:
    pass


def make_poller():
    return GoodPoller(interval=float(os.environ.get("APP_INTERVAL", "60")))


def make_nothing():
    return 42


def explode():
    raise KeyError("missing setting")


class Sender(WebhookSenderWorker):
    pass


not_callable = 3
