"""One rule for what is secret, one mask: headers by name, webhook URLs by their token segment."""

import io
import json
import logging

import pytest

from syncworkers import HTTPClientConfig, WebhookConfig
from syncworkers.exceptions import RequestError
from syncworkers.observability.logging import TextFormatter, get_logger
from syncworkers.outbox import Delivery
from syncworkers.observability.redaction import (
    MASK,
    Redactor,
    is_secret_key,
    is_token_segment,
    redact,
    redact_headers,
    redact_text,
    safe_url,
)

pytestmark = pytest.mark.transport_independent

SLACK = "https://hooks.slack.com/services/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"
SLACK_TOKEN = "aB3dE5fG7hJ9kL1mN3pQ5rS7"
DISCORD = ("https://discord.com/api/webhooks/123456789012345678/"
           "Zx9_yW8-vU7tS6rQ5pO4nM3lK2jI1hG0fE9dC8bA7zY6xW5vU4tS3rQ2pO1nM0lK9jI8hG7")
DISCORD_TOKEN = DISCORD.rsplit("/", 1)[1]


@pytest.mark.parametrize("name", [
    "Authorization", "Proxy-Authorization", "X-Custom-Auth", "X-Auth-Token", "X-API-Key", "apikey",
    "Cookie", "Set-Cookie", "webhook-signature", "X-Hub-Signature-256", "client_secret", "DB_PASSWORD",
    "passwd", "refresh_token",
])
def test_names_that_say_secret_are_secret(name):
    assert is_secret_key(name)
    assert redact_headers({name: "s3cr3t-value"}) == {name: MASK}


@pytest.mark.parametrize("name", ["Content-Type", "Accept", "User-Agent", "X-Request-Id", "status", "url"])
def test_ordinary_names_are_not_secret(name):
    assert not is_secret_key(name)
    assert redact_headers({name: "plain"}) == {name: "plain"}


def test_secret_headers_of_the_config_add_names_to_its_redactor_only():
    config = HTTPClientConfig(default_headers={"X-Partner-Ident": "p-0451-kept-private", "Accept": "a/b"},
                              secret_headers=("X-Partner-Ident",))
    redactor = config.redactor()

    assert config.secret_headers == ("X-Partner-Ident",)
    assert "p-0451-kept-private" not in repr(config) and "'Accept': 'a/b'" in repr(config)
    assert redactor.is_secret_key("x-partner-ident") and redactor.is_secret_key("X_PARTNER_IDENT")
    assert redactor.text("sent X-Partner-Ident: p-0451 ok") == f"sent X-Partner-Ident: {MASK}"
    assert redactor.text("the value p-0451-kept-private alone") == f"the value {MASK} alone"
    # Nothing process-wide: the rule alone, and another owner's redactor, know nothing of it.
    assert not is_secret_key("X-Partner-Ident") and not Redactor().is_secret_key("X-Partner-Ident")
    assert redact_text("sent X-Partner-Ident: p-0451 ok") == "sent X-Partner-Ident: p-0451 ok"


def test_secret_headers_must_be_header_names():
    with pytest.raises(ValueError, match="secret_headers"):
        HTTPClientConfig(secret_headers=("bad name:",))


def test_one_mask_everywhere():
    assert redact({"Authorization": "Bearer x"}) == {"Authorization": MASK}
    assert safe_url("https://h/p?token=abc") == f"https://h/p?{MASK}"
    delivery = Delivery(id="d", endpoint="/x", url="https://u:pw@h/p?q=1", body=b"{}",
                        headers={"X-Custom-Auth": "abc", "X-Trace": "t"}, state="pending", attempts=0,
                        next_attempt_at=0.0, created_at=0.0, updated_at=0.0, last_status=None,
                        last_error=None, owner=None, lease_until=None, delivered_at=None)
    as_dict = delivery.to_dict()
    assert as_dict["headers"] == {"X-Custom-Auth": MASK, "X-Trace": "t"}
    assert as_dict["url"] == f"https://h/p?{MASK}"


@pytest.mark.parametrize("url, token", [(SLACK, SLACK_TOKEN), (DISCORD, DISCORD_TOKEN)])
def test_webhook_urls_that_are_secrets_are_masked(url, token):
    shown = safe_url(url)

    assert token not in shown and shown.endswith("/" + MASK)
    assert safe_url(url + "?wait=true") == shown + "?" + MASK
    assert token not in redact_text(f"POST {url} failed")
    assert token not in str(RequestError("boom", url=url))
    assert token not in repr(WebhookConfig(base_url=url, endpoints={"chat": url}))


def test_ordinary_paths_are_kept():
    for url in ("https://api.example.com/v1/orders/12345", "https://h/webhooks/incoming-orders-from-shop",
                "https://h/releases/2024-05-01", "https://h/deep/path/with/short/segments"):
        assert safe_url(url) == url
        assert redact_text(f"GET {url}") == f"GET {url}"


def test_logs_mask_webhook_urls_and_custom_auth_headers():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    stdlib = logging.getLogger("syncworkers.test_redaction")
    stdlib.addHandler(handler)
    stdlib.setLevel(logging.INFO)
    try:
        get_logger(stdlib.name).info(f"sending to {SLACK}", url=DISCORD,
                                     headers={"X-Custom-Auth": "hunter2-auth"})
    finally:
        stdlib.removeHandler(handler)

    line = stream.getvalue()
    assert line and SLACK_TOKEN not in line and DISCORD_TOKEN not in line and "hunter2" not in line
    assert "hooks.slack.com/services/T0AB12CDE/B0FG34HIJ/***" in line


def test_registered_names_are_masked_in_json_text():
    redactor = Redactor(names=["X-Tenant-Pin"])
    text = json.dumps({"X-Tenant-Pin": "1234-5678", "other": "v"})

    assert redactor.text(text) == json.dumps({"X-Tenant-Pin": MASK, "other": "v"})
    assert redactor.headers({"x_tenant_pin": "1", "Accept": "a/b"}) == {"x_tenant_pin": MASK, "Accept": "a/b"}
    assert redactor.redact({"X-Tenant-Pin": "1234-5678"}) == {"X-Tenant-Pin": MASK}


def test_a_redactor_masks_the_values_it_is_given_and_their_credential_alone():
    redactor = Redactor(secrets=["reg-0123456789", None, "", "abc", b"bytes-secret-42"])
    redactor.add_headers({"Authorization": "Token tk-9876543210", "X-Trace": "trace-value-1"})

    text = redactor.text("reg-0123456789 bytes-secret-42 Token tk-9876543210 tk-9876543210 abc trace-value-1")
    assert text == f"{MASK} {MASK} {MASK} {MASK} abc trace-value-1"  # short values are not secrets
    assert repr(redactor) == "<Redactor: 4 secret value(s), 0 secret name(s)>"  # its repr shows no secret


# -- secret path segments (issue 21: letters-only tokens, webhook URL shapes) -----------------

LETTERS_TOKEN = "QwErTyUiOpAsDfGhJkLzXcVb"


@pytest.mark.parametrize("segment", [
    SLACK_TOKEN, DISCORD_TOKEN, LETTERS_TOKEN, "xKpQvRmZtLwNbYcHdJsGfAeU", "aBcD-eFgH_iJkL-mNoP-qRsT",
    "8f14e45fceea167a5a36dedd4bea2543",
])
def test_token_shaped_segments_are_secrets(segment):
    assert is_token_segment(segment)
    assert safe_url(f"https://h/api/{segment}/x") == f"https://h/api/{MASK}/x"


@pytest.mark.parametrize("segment", [
    "incoming-orders-from-shop", "GetCustomerOrdersByRegionAndDate", "IncomingWebhookForOrders",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "supercalifragilisticexpialidocious", "2024-05-01-2024-06-01-01",
    "12345678901234567890123", "shortAbC1", "orders_by_customer_and_region", "XMLHTTPRequestHandlerAPIs",
])
def test_ordinary_segments_are_kept(segment):
    assert not is_token_segment(segment)
    assert safe_url(f"https://h/api/{segment}") == f"https://h/api/{segment}"


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T0AB12CDE/B0FG34HIJ/QwErTyUiOp",  # short, letters only: by its shape
     f"https://hooks.slack.com/services/T0AB12CDE/B0FG34HIJ/{MASK}"),
    ("https://discord.com/api/webhooks/123456789012345678/shorttoken",
     f"https://discord.com/api/webhooks/123456789012345678/{MASK}"),
    ("https://contoso.webhook.office.com/webhookb2/2f4a6c1e-aaaa-bbbb-cccc-1234567890ab@72f988bf-86f1-41af"
     "-91ab-2d7cd011db47/IncomingWebhook/0d4d0d4d0d4d4d0d/0a1b2c3d-1111-2222-3333-444455556666",
     f"https://contoso.webhook.office.com/webhookb2/{MASK}/IncomingWebhook/{MASK}/{MASK}"),
])
def test_known_webhook_url_shapes_are_masked(url, shown):
    assert safe_url(url) == shown
    assert redact_text(f"POST {url} failed") == f"POST {shown} failed"


def test_ipv6_hosts_keep_their_brackets_when_printed():
    assert safe_url("http://u:p@[::1]:8080/x?q=1") == f"http://[::1]:8080/x?{MASK}"
    assert safe_url("http://[2001:DB8::1]/x") == "http://[2001:db8::1]/x"


@pytest.mark.transport_dependent
def test_a_pollers_default_name_masks_a_secret_path_like_every_printed_url():
    from syncworkers import PollerWorker

    url = f"https://hooks.example.com/services/T0AB12CDE/B0FG34HIJ/{LETTERS_TOKEN}"
    with PollerWorker(url, interval=60) as poller:
        shown = [poller.name, repr(poller), str(poller.health())]
    assert poller.name.startswith(f"PollerWorker GET https://hooks.example.com/services/T0AB12CDE/B0FG34HIJ/{MASK} (")
    assert all(LETTERS_TOKEN not in text for text in shown)


def test_output_keeps_a_url_followed_by_punctuation_and_sqlite_urls_as_written():
    from syncworkers.observability.redaction import redact_output, safe_url

    assert redact_output("circuit open for http://127.0.0.1:58001: 3 failures") == \
        "circuit open for http://127.0.0.1:58001: 3 failures"
    assert redact_output("see http://u:pw@127.0.0.1:8001/x?token=abc, then retry.") == \
        "see http://127.0.0.1:8001/x?***, then retry."
    assert redact_output("must start with redis://, rediss:// or postgresql://") == \
        "must start with redis://, rediss:// or postgresql://"
    assert safe_url("sqlite:////var/lib/app/outbox.db") == "sqlite:////var/lib/app/outbox.db"
    assert safe_url("sqlite:///outbox.db") == "sqlite:///outbox.db"
