import base64
import os
import time
import traceback
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook

from syncworkers import WebhookConfig, WebhookSenderWorker
from syncworkers.exceptions import ConfigError, SignatureError
from syncworkers.observability.redaction import redact_text
from syncworkers.signing import Signer, load_secret, sign, verify, webhook_headers

pytestmark = pytest.mark.transport_independent

# The published test vector (standard-webhooks libraries/python/tests/test_webhooks.py).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER = "whsec_" + base64.b64encode(b"another key, rotated in 2026").decode()


def signed_headers(secrets=SECRET, ts=TS, body=BODY):
    return {"webhook-id": MSG_ID, "webhook-timestamp": str(ts),
            "webhook-signature": sign(MSG_ID, ts, body, secrets)}


def test_published_vector():
    assert sign(MSG_ID, TS, BODY, SECRET) == EXPECTED
    assert sign(MSG_ID, TS, BODY.decode(), SECRET) == EXPECTED
    # The bare base64 form (no whsec_ prefix) is the same key.
    assert sign(MSG_ID, TS, BODY, SECRET[len("whsec_"):]) == EXPECTED
    assert Signer(SECRET).headers(MSG_ID, BODY, timestamp=TS) == {
        "webhook-id": MSG_ID, "webhook-timestamp": str(TS), "webhook-signature": EXPECTED}


def test_reference_library_verifies_our_signature():
    ts = int(time.time())  # the reference library checks against the real clock
    headers = Signer(SECRET).headers(MSG_ID, BODY, timestamp=ts)
    assert Webhook(SECRET).verify(BODY, headers) == {"test": 2432232314}


def test_reference_library_verifies_each_rotated_signature():
    headers = Signer([SECRET, OTHER]).headers(MSG_ID, BODY)
    for secret in (SECRET, OTHER):
        assert Webhook(secret).verify(BODY, headers) == {"test": 2432232314}


def test_we_verify_reference_library_signature():
    when = datetime.fromtimestamp(TS, tz=timezone.utc)
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TS),
               "webhook-signature": Webhook(OTHER).sign(MSG_ID, when, BODY.decode())}
    assert verify(BODY, headers, OTHER, now=TS) is True
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        verify(BODY, headers, SECRET, now=TS)


def test_rotation_signs_with_each_secret_in_order():
    value = sign(MSG_ID, TS, BODY, [SECRET, OTHER])
    assert value.split(" ") == [EXPECTED, sign(MSG_ID, TS, BODY, OTHER)]
    headers = signed_headers([SECRET, OTHER])
    assert verify(BODY, headers, SECRET, now=TS)
    assert verify(BODY, headers, OTHER, now=TS)
    # A receiver holding both the old and the new key accepts a sender on either.
    assert verify(BODY, signed_headers(OTHER), [SECRET, OTHER], now=TS)


def test_other_versions_and_garbage_signatures_are_skipped():
    headers = signed_headers()
    headers["webhook-signature"] = f"v2,{EXPECTED[3:]} junk v1,not*base64 {EXPECTED}"
    assert verify(BODY, headers, SECRET, now=TS)
    headers["webhook-signature"] = f"v2,{EXPECTED[3:]}"
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        verify(BODY, headers, SECRET, now=TS)


@pytest.mark.parametrize("body, secret, msg_id", [
    (b'{"test": 2432232315}', SECRET, MSG_ID),
    (BODY, OTHER, MSG_ID),
    (BODY, SECRET, "msg_other"),
])
def test_tampering_or_wrong_secret_is_rejected(body, secret, msg_id):
    headers = signed_headers()
    headers["webhook-id"] = msg_id
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        verify(body, headers, secret, now=TS)


def test_timestamp_tolerance():
    assert verify(BODY, signed_headers(), SECRET, now=TS + 300)
    assert verify(BODY, signed_headers(), SECRET, now=TS - 300)
    with pytest.raises(SignatureError, match="too old"):
        verify(BODY, signed_headers(), SECRET, now=TS + 301)
    with pytest.raises(SignatureError, match="too new"):
        verify(BODY, signed_headers(), SECRET, now=TS - 301)
    with pytest.raises(SignatureError, match="too old"):
        verify(BODY, signed_headers(), SECRET, tolerance=10, now=TS + 11)


@pytest.mark.parametrize("value", ["hello", "1614265330.5", "-1614265330", " 1614265330", "1e9"])
def test_non_integer_timestamp(value):
    headers = signed_headers()
    headers["webhook-timestamp"] = value
    with pytest.raises(SignatureError, match="not an integer"):
        verify(BODY, headers, SECRET, now=TS)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(name):
    headers = signed_headers()
    del headers[name]
    with pytest.raises(SignatureError, match=f"missing {name} header"):
        verify(BODY, headers, SECRET, now=TS)
    headers[name] = ""
    with pytest.raises(SignatureError, match=f"missing {name} header"):
        verify(BODY, headers, SECRET, now=TS)


def test_header_names_any_case_and_svix_aliases():
    headers = signed_headers()
    assert verify(BODY, {k.title(): v for k, v in headers.items()}, SECRET, now=TS)
    assert verify(BODY, {k.upper(): v for k, v in headers.items()}, SECRET, now=TS)
    svix = {k.replace("webhook-", "Svix-"): v for k, v in headers.items()}
    assert verify(BODY, svix, SECRET, now=TS)


def test_signature_error_is_a_value_error():
    with pytest.raises(ValueError):
        verify(BODY, {}, SECRET, now=TS)


def test_raw_bytes_secret_is_used_as_is():
    raw = b"\x00raw key bytes, 24 or more\xff"
    assert load_secret(raw) == raw
    b64 = base64.b64encode(raw).decode()
    assert sign(MSG_ID, TS, BODY, raw) == sign(MSG_ID, TS, BODY, "whsec_" + b64)
    assert verify(BODY, signed_headers(raw), "whsec_" + b64, now=TS)


def test_unpadded_base64_secret():
    key = b"a key of twenty-five bytes"
    unpadded = base64.b64encode(key).decode().rstrip("=")
    assert load_secret("whsec_" + unpadded) == key


@pytest.mark.parametrize("bad", ["whsec_not*base64!secret", "whsec_", "", "whsec_A", b"", [], 42])
def test_invalid_secret_is_config_error_without_the_secret(bad):
    with pytest.raises(ConfigError) as info:
        Signer(bad)
    if isinstance(bad, str) and len(bad) > len("whsec_") + 1:
        # Nor in the traceback a log handler would print (chained causes included).
        text = "".join(traceback.format_exception(type(info.value), info.value, info.value.__traceback__))
        assert bad[len("whsec_"):] not in text
    with pytest.raises(ConfigError):
        sign(MSG_ID, TS, BODY, bad)
    with pytest.raises(ConfigError):
        verify(BODY, signed_headers(), bad, now=TS)


def test_repr_hides_secrets():
    text = repr(Signer([SECRET, OTHER]))
    assert text == "Signer(2 secrets)"
    assert "MfKQ9r8G" not in text and OTHER[6:] not in text
    assert repr(Signer(SECRET)) == "Signer(1 secret)"


@pytest.mark.transport_dependent
def test_a_senders_redactor_masks_its_signing_secrets():
    fresh = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with WebhookSenderWorker("http://127.0.0.1:9", signing_secret=f"{SECRET} {fresh}") as sender:
        text = sender.redactor.text(f"secret {fresh} or bare {fresh[len('whsec_'):]}")
    assert fresh[len("whsec_"):] not in text and "***" in text
    assert fresh[len("whsec_"):] in redact_text(f"bare {fresh[len('whsec_'):]}")  # nothing process-wide


@pytest.mark.parametrize("short", ["whsec_" + base64.b64encode(b"x" * 23).decode(), b"y" * 23, "", " "])
def test_empty_or_short_secret_is_a_config_error(short):
    with pytest.raises(ConfigError, match="empty|at least 24"):
        Signer(short)
    with pytest.raises(ConfigError, match="signing_secret"):
        WebhookConfig(signing_secret=short)
    Signer("whsec_" + base64.b64encode(b"x" * 24).decode())  # 24 bytes is enough


def test_empty_secret_from_the_environment_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", "")
    with pytest.raises(ConfigError, match="WEBHOOK_SIGNING_SECRET"):
        WebhookConfig.from_env()
    with pytest.raises(ConfigError, match="WEBHOOK_SIGNING_SECRET"):
        WebhookSenderWorker("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="empty"):
        WebhookSenderWorker("http://127.0.0.1:9", signing_secret="")


def test_webhook_headers_sign_only_with_a_signer():
    assert webhook_headers(MSG_ID, BODY, timestamp=TS) == {"webhook-id": MSG_ID, "webhook-timestamp": str(TS)}
    signed = webhook_headers(MSG_ID, BODY, Signer(SECRET), timestamp=TS)
    assert signed["webhook-signature"] == EXPECTED
    unsigned_now = webhook_headers(MSG_ID, BODY)
    assert abs(int(unsigned_now["webhook-timestamp"]) - time.time()) < 60


def test_float_timestamp_is_refused():
    with pytest.raises(TypeError):
        sign(MSG_ID, 1614265330.5, BODY, SECRET)
