"""The README's Flask recipe, executed as written: its outbox really delivers and its receiver verifies."""

import os
import re

import pytest

from .helpers import new_secret, wait_for

pytest.importorskip("flask")
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")


def code_blocks(section):
    text = open(README, encoding="utf-8").read()
    start = text.index(section)
    body = text[start:text.index("\n----", start + len(section) + 40)]
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", body)
    return ["\n".join(line[4:] for line in block.splitlines()) for block in blocks]


def test_the_flask_recipe_delivers_signed_webhooks_and_verifies_received_ones(server, tmp_path):
    from syncworkers import verify
    from syncworkers.signing import Signer

    server.route("POST", "/hooks/orders", status=200)
    secret = new_secret()
    scope = {"PARTNER_URL": server.base_url, "OUTBOX_FILE": str(tmp_path / "outbox.db"), "SECRET": secret,
             "__name__": "readme_flask"}
    exec(compile(code_blocks("In web apps, cron and gunicorn")[0], "README.rst", "exec"), scope)
    app = scope["app"]
    try:
        client = app.test_client()
        delivery_id = client.post("/orders/7").get_json()["id"]
        assert wait_for(lambda: len(server.calls("/hooks/orders")) == 1, timeout=30)
        call = server.calls("/hooks/orders")[0]
        assert call.header("webhook-id") == delivery_id and call.json() == {"order": 7}
        assert verify(call.body, call.headers, secret)
        body = b'{"event": "paid"}'
        ok = client.post("/hooks/in", data=body, headers=Signer(secret).headers("msg_1", body))
        assert ok.status_code == 200 and ok.get_json() == {"got": {"event": "paid"}}
        bad = client.post("/hooks/in", data=body, headers=Signer(new_secret()).headers("msg_2", body))
        assert bad.status_code == 400
    finally:
        scope["sw"].stop(timeout=10)
