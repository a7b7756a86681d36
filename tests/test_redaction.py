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
    is_secret_key,
    redact,
    redact_headers,
    redact_text,
    register_secret_names,
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


def test_secret_headers_of_the_config_add_names():
    assert not is_secret_key("X-Partner-Ident")
    config = HTTPClientConfig(default_headers={"X-Partner-Ident": "p-0451-kept-private", "Accept": "a/b"},
                              secret_headers=("X-Partner-Ident",))

    assert config.secret_headers == ("X-Partner-Ident",)
    assert "p-0451-kept-private" not in repr(config) and "'Accept': 'a/b'" in repr(config)
    assert is_secret_key("x-partner-ident") and is_secret_key("X_PARTNER_IDENT")
    assert redact_text("sent X-Partner-Ident: p-0451 ok") == f"sent X-Partner-Ident: {MASK}"


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
    register_secret_names(["X-Tenant-Pin"])
    text = json.dumps({"X-Tenant-Pin": "1234-5678", "other": "v"})

    assert redact_text(text) == json.dumps({"X-Tenant-Pin": MASK, "other": "v"})
