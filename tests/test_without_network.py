"""Where a real server adds nothing: errors no loopback server produces on demand (``responses``)
and wall-clock defaults (``freezegun``). Everything else is tested against real servers."""

from datetime import datetime, timezone

import pytest
import requests
import responses
from freezegun import freeze_time

from syncworkers import HTTPClientConfig, Message, TransportError
from syncworkers.http.client import HTTPClient
from syncworkers.signing import Signer, verify

pytestmark = pytest.mark.transport_independent  # each test names its transport

URL = "https://partner.invalid/hook"  # never resolved: responses answers before any socket


class RecordingEvent:
    def __init__(self):
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return False

    def is_set(self):
        return False

    def set(self):
        pass


@pytest.mark.parametrize("error, fragment", [
    (requests.exceptions.SSLError("certificate verify failed"), "TLS error"),
    (requests.exceptions.ChunkedEncodingError("broken chunk"), "connection failed"),
    (requests.exceptions.ContentDecodingError("bad gzip"), "connection failed"),
    (requests.exceptions.ProxyError("proxy refused"), "connection failed"),
])
@responses.activate
def test_transport_failures_map_to_transport_error_after_retries(error, fragment):
    # ``responses`` stands in for the requests transport: its error mapping is what is tested here
    # (the curl transport's errors are made by real receivers in test_transport_errors.py).
    responses.add(responses.POST, URL, body=error)
    stop = RecordingEvent()
    config = HTTPClientConfig(max_retries=2, retry_delay=0.5, transport="requests")
    with HTTPClient(config, stop_event=stop) as client:
        with pytest.raises(TransportError, match=fragment) as info:
            client.post(URL, data=b"{}")
    assert info.value.attempts == 3
    assert len(responses.calls) == 3
    assert stop.waits == [0.5, 1.0]


@freeze_time("2026-03-04 05:06:07")
def test_message_timestamp_is_the_current_utc_time():
    assert Message().timestamp == datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


@freeze_time("2026-03-04 05:06:07")
def test_signer_stamps_the_current_time_and_verifies_within_tolerance():
    signer = Signer("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = signer.headers("msg_1", b'{"a":1}')
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc).timestamp()
    assert headers["webhook-timestamp"] == str(int(now))
    assert verify(b'{"a":1}', headers, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_outbox_records_wall_clock_times(tmp_path):
    from syncworkers.outbox import Outbox

    with freeze_time("2026-03-04 05:06:07") as frozen:
        with Outbox(str(tmp_path / "o.sqlite3")) as outbox:
            delivery_id = outbox.add("/hook", "http://127.0.0.1:9/hook", b"{}")
            assert [d.id for d in outbox.claim_due(10)] == [delivery_id]
            frozen.tick(90)
            outbox.mark_dead(delivery_id, "refused: status 400", status=400)
            delivery = outbox.get(delivery_id)
    start = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc).timestamp()
    assert (delivery.created_at, delivery.updated_at) == (start, start + 90)
