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


#: What leaky_factory's error quotes: a URL password and a query token the CLI must not print.
LEAKY_URL = "https://admin:hunter2-pw@127.0.0.1:9/api?sig=s3cr3t-sig-value&page=1"


def leaky_factory():
    raise RuntimeError(f"cannot reach {LEAKY_URL}")


def leaky_config():
    from syncworkers import ConfigError

    raise ConfigError(f"bad upstream {LEAKY_URL}")


class Sender(WebhookSenderWorker):
    pass


not_callable = 3


class Relay(WebhookSenderWorker):
    """A cron relay: RELAY_URL receives every message queued before the run."""

    QUEUED = 3

    def __init__(self):
        from syncworkers import MemoryQueue

        super().__init__(base_url=os.environ["RELAY_URL"])
        self.source = MemoryQueue()
        for n in range(self.QUEUED):
            self.source.put({"n": n})

    def process(self):  # the reference document's relay loop
        for message in self.source.consume():
            self.process_message(message)

    def process_message(self, message):
        return self.send_webhook("/events", message.body)


class BrokenRelay(Relay):
    def process_message(self, message):
        raise RuntimeError("cannot route this message")


def outbox_sender():
    return WebhookSenderWorker(base_url=os.environ["RELAY_URL"])
