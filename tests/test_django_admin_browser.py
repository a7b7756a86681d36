"""The outbox admin in a real headless browser (Debian's chromium and chromedriver, driven by selenium)
against ``manage.py runserver``: log in, filter the dead deliveries, replay one, see it pending, then
delivered once ``manage.py syncworkers run --once`` has sent it, with both attempts in its log.

Without chromium, chromedriver or selenium the test is skipped, except when CI is set: there it fails.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from .helpers import need_module, unavailable, wait_for

need_module("django", "Django")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PASSWORD = "browser-test-password"
#: Seconds a page may take to show what the test waits for (a hang becomes a failure, nothing is timed).
PAGE_WAIT = 30


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    """Headless chromium, its profile in a temporary folder, nothing fetched from the network."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed", "browser")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(binary) is None:
            unavailable(f"{binary} not found (Debian: apt-get install chromium chromium-driver)", "browser")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1024",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def manage(env, *args, check=True):
    done = subprocess.run([sys.executable, MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def site(tmp_path, server):
    """The project migrated on a fresh SQLite file, an admin user, one dead delivery (its receiver answered
    400), and ``manage.py runserver`` serving it: (base URL, env, delivery id)."""
    server.route("POST", "/hooks/orders", status=400, body=b"unknown order")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "DJANGO_"))}
    env.update({"PYTHONPATH": ROOT, "DJANGO_SETTINGS_MODULE": "tests.apps.djangoproject.settings",
                "DJANGO_DB": str(tmp_path / "site.sqlite3"), "DJANGO_HOOKS_BASE_URL": server.base_url,
                "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    made = manage(env, "shell", "-c", "from syncworkers.contrib.django import enqueue;"
                                      " print(enqueue('/hooks/orders', {'order': 7}))")
    delivery_id = made.stdout.strip().splitlines()[-1]
    assert manage(env, "syncworkers", "run", "--once", check=False).returncode == 1  # it died: 400 is final
    port = free_port()
    proc = subprocess.Popen([sys.executable, MANAGE, "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers():
            try:
                with urllib.request.urlopen(f"{base}/admin/login/", timeout=5):
                    return True
            except OSError:
                return False

        assert wait_for(lambda: answers() or proc.poll() is not None, timeout=60), "runserver did not answer"
        assert proc.poll() is None, proc.stderr.read()
        yield base, env, delivery_id
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


def test_log_in_filter_dead_replay_and_see_it_pending_then_delivered(browser, site, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    base, env, delivery_id = site
    wait = WebDriverWait(browser, PAGE_WAIT)

    def row_state():
        row = browser.find_element(By.XPATH, f"//tr[.//a[normalize-space()='{delivery_id}']]")
        return row.find_element(By.CSS_SELECTOR, "td.field-state").text

    browser.get(f"{base}/admin/login/?next=/admin/syncworkers/delivery/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(shown.title_contains("Select delivery to change"))

    # filter: dead
    browser.find_element(By.XPATH, "//*[@id='changelist-filter']//a[normalize-space()='dead']").click()
    wait.until(shown.url_contains("state__exact=dead"))
    assert row_state() == "dead"

    # replay it
    browser.find_element(By.CSS_SELECTOR, f"input[name='_selected_action'][value='{delivery_id}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("replay")
    browser.find_element(By.NAME, "index").click()
    message = wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li")))
    assert message.text == "1 dead deliveries replayed: due now."
    assert browser.find_elements(By.XPATH, f"//a[normalize-space()='{delivery_id}']") == []  # no longer dead

    browser.find_element(By.XPATH, "//*[@id='changelist-filter']//a[normalize-space()='pending']").click()
    wait.until(shown.url_contains("state__exact=pending"))
    assert row_state() == "pending"

    # the receiver takes it now; the sender delivers it (same id), and the page says so
    server.route("POST", "/hooks/orders", status=200)
    manage(env, "syncworkers", "run", "--once")
    assert [call.header("webhook-id") for call in server.calls("/hooks/orders")] == [delivery_id] * 2
    browser.find_element(By.XPATH, "//*[@id='changelist-filter']//a[normalize-space()='All']").click()
    wait.until(shown.title_contains("Select delivery to change"))
    assert row_state() == "delivered"
    browser.find_element(By.XPATH, f"//a[normalize-space()='{delivery_id}']").click()
    wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "table.syncworkers-attempts")))
    statuses = [cell.get_attribute("textContent") for cell in
                browser.find_elements(By.CSS_SELECTOR, "table.syncworkers-attempts tbody tr td:nth-child(5)")]
    assert statuses == ["400", "200"]
    assert "unknown order" in browser.find_element(By.CSS_SELECTOR, "table.syncworkers-attempts").text
