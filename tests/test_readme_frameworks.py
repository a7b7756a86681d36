"""The README's "In web apps, cron and gunicorn" samples, each run as written.

The Flask sample becomes an ``app.py`` that is served by Flask's test client, by the README's
gunicorn line (three workers coordinated on a real Redis) and polled by its cron line; the
Django samples become a project's settings and views, driven by Django's test client with CSRF
checks on. Only addresses (ports, paths) are substituted.
"""

import collections
import importlib
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from .helpers import need_module, need_program, new_secret, wait_for

need_module("flask", "Flask")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.rst")
SECTION = "In web apps, cron and gunicorn"
BIN = os.path.dirname(sys.executable)


def samples():
    """The section's code samples in order: ``code-block:: python`` blocks and ``::`` literal blocks."""
    text = open(README, encoding="utf-8").read()
    start = text.index(f"\n{SECTION}\n---") + 1
    end = text.index("\n---", start + len(SECTION) + 40)
    body = text[start:text.rindex("\n", 0, end)]
    blocks = re.findall(r"(?:\.\. code-block:: python|::)\n\n((?:    .*\n|\n)+)", body)
    return [textwrap.dedent(block).strip() + "\n" for block in blocks]


def sample(word):
    found = [s for s in samples() if word in s]
    assert len(found) == 1, f"one sample with {word!r} expected, found {len(found)}"
    return found[0]


def test_each_sample_of_the_section_is_run_by_a_test_here():
    kinds = ["def create_app", "syncworkers check", "import captured_webhooks", "def test_an_order_enqueues",
             "gunicorn --workers", "multiprocess.MultiProcessCollector(registry)",
             "PROMETHEUS_MULTIPROC_DIR=", 'INSTALLED_APPS += ["syncworkers.contrib.django"]',
             "def pay(request", "python manage.py migrate", "class PayTests(TestCase)",
             "* * * * syncworkers run --once"]
    assert len(samples()) == len(kinds)
    for kind in kinds:
        sample(kind)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_dir(tmp_path, server):
    """A folder holding the README's app.py, and the variables it reads."""
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "app.py").write_text(sample("def create_app"))
    server.route("POST", "/hooks/orders", status=200)
    server.route("GET", "/orders", json=[])
    secret = new_secret()
    env = {"PARTNER_URL": server.base_url, "OUTBOX_URL": f"sqlite:///{tmp_path}/outbox.db", "WEBHOOK_SECRET": secret}
    return folder, env


@pytest.mark.transport_dependent
def test_the_flask_sample_delivers_signed_webhooks_polls_and_verifies_received_ones(app_dir, server, monkeypatch):
    from syncworkers import verify
    from syncworkers.signing import Signer

    folder, env = app_dir
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    module = importlib.import_module("app")
    try:
        app = module.create_app()
        client = app.test_client()
        delivery_id = client.post("/orders/7").get_json()["id"]  # the first request starts the workers
        assert wait_for(lambda: len(server.calls("/hooks/orders")) == 1, timeout=30)
        call = server.calls("/hooks/orders")[0]
        assert call.header("webhook-id") == delivery_id and call.json() == {"order": 7}
        assert verify(call.body, call.headers, env["WEBHOOK_SECRET"])
        assert wait_for(lambda: len(server.calls("/orders")) >= 1, timeout=30)  # OrderPoller runs too
        body = b'{"event": "paid"}'
        ok = client.post("/hooks/in", data=body, headers=Signer(env["WEBHOOK_SECRET"]).headers("msg_1", body))
        assert ok.status_code == 200 and ok.get_json() == {"got": {"event": "paid"}}
        bad = client.post("/hooks/in", data=body, headers=Signer(new_secret()).headers("msg_2", body))
        assert bad.status_code == 400
    finally:
        module.sw.stop(timeout=10, app=app)
        sys.modules.pop("app", None)


@pytest.mark.parametrize("secret", ["good", "short"])
def test_the_check_line_checks_the_flask_sample_one_line_per_problem(app_dir, secret):
    folder, env = app_dir
    if secret == "short":
        env = {**env, "WEBHOOK_SECRET": "whsec_c2hvcnQ="}
    words = shlex.split(sample("syncworkers check").split("#")[0])
    done = subprocess.run([sys.executable, "-m", *words], cwd=folder, env=command_env(env), capture_output=True,
                          text=True, timeout=120)
    if secret == "good":
        assert done.returncode == 0, done.stderr
        assert "ok  orders: OrderPoller" in done.stdout and "ok  outbox sqlite:///" in done.stdout
    else:
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines() == [
            "Error: SYNCWORKERS_SIGNING_SECRET: signing secret is 5 bytes long; at least 24 are needed "
            "(Standard Webhooks: 24 to 64, e.g. 'whsec_' + base64 of 32 random bytes)"]


def test_the_flask_test_samples_capture_the_order_webhook_under_pytest(app_dir, server):
    folder, env = app_dir
    (folder / "conftest.py").write_text(sample("import captured_webhooks"))
    (folder / "test_orders.py").write_text(sample("def test_an_order_enqueues"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=folder,
                          env=command_env(env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert server.requests == []  # nothing sent, nothing polled: the test's app starts no worker


def command_env(env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "HTTP_"))}
    return {**base, "PYTHONPATH": ROOT, "PATH": f"{BIN}:{base.get('PATH', '/usr/bin:/bin')}", **env}


def launch(line, folder, env):
    """Start a README command line (``NAME=value ... command args``) in *folder*."""
    words = shlex.split(line)
    assignments = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    args = [w for w in words if w.split("=", 1)[0] not in assignments]
    return subprocess.Popen(args, cwd=folder, env=command_env({**env, **assignments}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def order(port, n):
    """POST /orders/<n> to the README app on *port*: the webhook id it enqueued (None while it is not up)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/orders/{n}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())["id"]
    except OSError:
        return None


def orders_delivered(port, server, count):
    """Place orders 1..count once the app answers; wait until the partner got each one's webhook."""
    assert wait_for(lambda: order(port, 0) is not None, timeout=60)
    ids = {order(port, n) for n in range(1, count + 1)}
    assert wait_for(lambda: ids <= {c.header("webhook-id") for c in server.calls("/hooks/orders")}, timeout=60)


def test_the_gunicorn_line_delivers_from_every_worker_and_polls_once_per_tick(app_dir, server):
    from .redis_server import RedisServer, require_redis_package

    need_program("gunicorn", "gunicorn", path=BIN)
    require_redis_package()
    folder, env = app_dir
    port = free_port()
    with RedisServer() as redis_server:
        line = sample("gunicorn --workers").replace("redis://127.0.0.1:6379/0", redis_server.url)
        line = line.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        proc = launch(line, folder, env)
        try:
            # The workers start as gunicorn's workers boot: the poller polls before any request.
            assert wait_for(lambda: len(server.calls("/orders")) >= 1, timeout=60)
            assert [r.path for r in server.requests] == ["/orders"] * len(server.requests)
            orders_delivered(port, server, 29)
            assert wait_for(lambda: len(server.calls("/orders")) >= 4, timeout=60)
            wall_minus_mono = time.time() - time.monotonic()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ticks = collections.Counter(math.floor(c.received_at + wall_minus_mono) for c in server.calls("/orders"))
    assert not {tick: n for tick, n in ticks.items() if n > 1}, ticks


def scrape(url):
    """``{(name, labels...): value}`` of one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=30) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(values, name, **labels):
    return sum(v for (n, got), v in values.items() if n == name and set(labels.items()) <= set(got))


#: A route the multiprocess test adds to the README app: it holds its worker for half a second.
SLOW_PID = """
    import time as _time

    @app.get("/slow-pid")
    def slow_pid():
        _time.sleep(0.5)
        return {"pid": os.getpid()}

"""


def slow_pids(port):
    """The pids of the workers that answered three concurrent /slow-pid requests."""
    def ask(_):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow-pid", timeout=30) as reply:
                return json.loads(reply.read())["pid"]
        except OSError:
            return None

    with ThreadPoolExecutor(3) as pool:
        return {pid for pid in pool.map(ask, range(3)) if pid is not None}


def test_the_multiprocess_metrics_sample_adds_up_every_gunicorn_worker(app_dir, server, tmp_path):
    need_module("prometheus_client", "Prometheus")
    need_program("gunicorn", "gunicorn", path=BIN)
    folder, env = app_dir
    # The route goes where the README says: inside create_app, on its app.
    route = textwrap.indent(sample("multiprocess.MultiProcessCollector(registry)"), "    ")
    (folder / "app.py").write_text(sample("def create_app") + "\n\n_readme_create_app = create_app\n\n\n"
                                   "def create_app():\n    app = _readme_create_app()\n" + route + SLOW_PID
                                   + "    return app\n")
    metrics_dir = tmp_path / "metrics"
    port = free_port()
    prepare, line = sample("PROMETHEUS_MULTIPROC_DIR=").strip().splitlines()
    subprocess.run(prepare.replace("/tmp/shop-metrics", str(metrics_dir)), shell=True, check=True)
    proc = launch(line.replace("/tmp/shop-metrics", str(metrics_dir)).replace("127.0.0.1:8000", f"127.0.0.1:{port}"),
                  folder, env)
    url = f"http://127.0.0.1:{port}"
    host = server.base_url.split("://", 1)[1]
    try:
        assert wait_for(lambda: order(port, 0) is not None, timeout=60)
        # Three requests that each hold a worker for half a second: all three workers serve (and start
        # their sender and poller). Asked again until three pids answered, in case one was still booting.
        assert wait_for(lambda: len(slow_pids(port)) == 3, timeout=60)
        with ThreadPoolExecutor(6) as pool:  # orders from several clients at once: several workers enqueue
            ids = set(pool.map(lambda n: order(port, n), range(1, 40)))
        assert None not in ids
        assert wait_for(lambda: ids <= {c.header("webhook-id") for c in server.calls("/hooks/orders")},
                        timeout=60)
        delivered = len(server.calls("/hooks/orders"))
        assert wait_for(lambda: total(scrape(f"{url}/metrics"), "syncworkers_deliveries_total", host=host,
                                      outcome="delivered") == delivered, timeout=30)
        # Every scrape, whichever worker answers it, counts the deliveries of all three.
        scrapes = [scrape(f"{url}/metrics") for _ in range(12)]
        assert {total(s, "syncworkers_deliveries_total", host=host, outcome="delivered") for s in scrapes} == {
            float(delivered)}
        assert all(total(s, "syncworkers_delivery_duration_seconds_count", host=host) >= delivered for s in scrapes)
        assert all(("syncworkers_outbox_deliveries", (("state", "delivered"),)) in s for s in scrapes)
        # Each of the three polls on its own (no coordination here): each counts in its own file.
        pids = {name.rsplit("_", 1)[1].split(".")[0] for name in os.listdir(metrics_dir)
                if name.startswith("counter_")}
        assert len(pids) == 3, pids
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_the_cron_line_runs_the_poller_once_under_its_lock(app_dir, server, tmp_path):
    folder, env = app_dir
    line = sample("* * * * syncworkers run --once")
    command = shlex.split(line)[5:]  # the five schedule fields, then the command
    command = [str(tmp_path / "orders.lock") if w == "/tmp/orders.lock" else str(folder) if w == "/srv/shop" else w
               for w in command]
    done = subprocess.run(command, cwd="/", env=command_env(env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(server.calls("/orders")) == 1
    assert (tmp_path / "orders.lock").exists()


DJANGO_BASE_SETTINGS = """
import os
SECRET_KEY = "readme-test-only"
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True
MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"]}}
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
"""

DJANGO_SCRIPT = """
import json, django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from syncworkers.signing import Signer

call_command("migrate", "--run-syncdb", verbosity=0)
client = Client(enforce_csrf_checks=True)
body = b'{"event": "paid"}'
ok = client.post("/hooks/in", data=body, content_type="application/json",
                 headers=Signer(settings.PARTNER_SECRET).headers("msg_1", body))
bad = client.post("/hooks/in", data=body, content_type="application/json",
                  headers=Signer(settings.SYNCWORKERS["SIGNING_SECRET"]).headers("msg_2", body))
paid = Client().post("/pay/5")
call_command("syncworkers", "run", "--once")
print(json.dumps({"ok": [ok.status_code, ok.json()], "bad": [bad.status_code, bad.content.decode()],
                  "paid": [paid.status_code, paid.json()]}))
"""


#: A manage.py as ``django-admin startproject`` writes it (the settings module comes from the environment).
DJANGO_MANAGE = """import sys

from django.core.management import execute_from_command_line

if __name__ == "__main__":
    execute_from_command_line(sys.argv)
"""


@pytest.fixture
def shop_site(server, tmp_path):
    """The README's Django samples as a project in *tmp_path*: settings, the shop app's views, a manage.py;
    the environment to run it in."""
    need_module("django", "Django")
    server.route("POST", "/hooks/orders", status=200)
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "__init__.py").write_text("")
    (shop / "models.py").write_text("from django.db import models\n\n\nclass Order(models.Model):\n"
                                    "    number = models.IntegerField()\n")
    (shop / "views.py").write_text(sample("def pay(request"))
    (shop / "urls.py").write_text("from django.urls import path\n\nfrom . import views\n\n"
                                  "urlpatterns = [path('pay/<int:n>', views.pay), path('hooks/in', views.receive)]\n")
    (tmp_path / "site_settings.py").write_text(DJANGO_BASE_SETTINGS + sample("INSTALLED_APPS +="))
    (tmp_path / "manage.py").write_text(DJANGO_MANAGE)
    signing, partner = new_secret(), new_secret()
    return command_env({"PYTHONPATH": f"{tmp_path}:{ROOT}", "DJANGO_SETTINGS_MODULE": "site_settings",
                        "DJANGO_DB": str(tmp_path / "db.sqlite3"), "PARTNER_URL": server.base_url,
                        "WEBHOOK_SECRET": signing, "PARTNER_SECRET": partner})


def test_the_django_samples_enqueue_in_the_transaction_deliver_and_verify_with_csrf_on(shop_site, server, tmp_path):
    env = shop_site
    done = subprocess.run([sys.executable, "-c", DJANGO_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers["ok"] == [200, {"got": {"event": "paid"}}]  # csrf-exempt and verified
    assert answers["bad"][0] == 400 and answers["bad"][1].startswith("invalid webhook signature")
    assert answers["paid"][0] == 200
    calls = server.calls("/hooks/orders")
    assert [c.json() for c in calls] == [{"order": 5}]
    assert calls[0].header("webhook-id") == answers["paid"][1]["id"]
    from syncworkers import verify

    assert verify(calls[0].body, calls[0].headers, env["WEBHOOK_SECRET"])


def test_the_django_command_lines_and_test_sample_run_as_written(shop_site, server, tmp_path):
    env = shop_site
    outputs = []
    for line in sample("python manage.py migrate").splitlines():
        words = shlex.split(line.split("#", 1)[0])
        assert words[:2] == ["python", "manage.py"]
        done = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done)
    assert outputs[1].stderr == ""  # --verbosity 0: nothing to say
    assert outputs[2].stdout.split() == ["pending", "0", "in_flight", "0", "delivered", "0", "dead", "0", "held", "0"]
    (tmp_path / "shop" / "tests.py").write_text(sample("class PayTests(TestCase)"))
    tested = subprocess.run([sys.executable, "manage.py", "test", "shop", "--noinput"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stderr
    assert "Ran 1 test" in tested.stderr and "\nOK" in tested.stderr, tested.stderr
    assert server.calls("/hooks/orders") == []  # a test sends nothing
