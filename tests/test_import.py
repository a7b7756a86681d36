"""Importing syncworkers changes nothing in the process; building a worker or a Runner installs, once."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SNAPSHOT = r'''
import gc, json, logging, pkgutil, signal, sys, threading, warnings

import importlib
import prometheus_client  # its own default registry exists before syncworkers is imported

# What the libraries syncworkers uses change when they are imported (requests and urllib3 add
# warning filters) is theirs: imported first, so that only syncworkers' own doing is compared.
for library in ("requests", "urllib3", "click", "environs", "circuitbreaker", "psycopg", "psycopg_pool", "redis",
                "pycurl", "flask", "django", "gunicorn", "opentelemetry.trace", "opentelemetry.propagate"):
    importlib.import_module(library)

def loggers():
    manager = logging.Logger.manager
    found = {"": logging.getLogger()}
    found.update({n: l for n, l in manager.loggerDict.items() if isinstance(l, logging.Logger)})
    return {name: {"level": l.level, "propagate": l.propagate, "disabled": l.disabled,
                   "handlers": [type(h).__name__ for h in l.handlers],
                   "filters": [type(f).__name__ for f in l.filters]}
            for name, l in found.items()}

def state():
    return {
        "loggers": loggers(),
        "registry": sorted(prometheus_client.REGISTRY._names_to_collectors),
        "threads": sorted(t.name for t in threading.enumerate()),
        "signals": {s.name: repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)},
        "warnings": [repr(f) for f in warnings.filters],
        "hooks": [repr(sys.excepthook), repr(threading.excepthook), repr(sys.displayhook)],
        "environ": sorted(__import__("os").environ.items()),
    }

before = state()
import syncworkers
# Django imports its models and admin modules itself, once its app registry is ready.
names = [m.name for m in pkgutil.walk_packages(syncworkers.__path__, "syncworkers.")
         if ".contrib.django.migrations" not in m.name and not m.name.endswith("__main__")
         and m.name not in ("syncworkers.contrib.django.models", "syncworkers.contrib.django.admin")]
for name in names:
    __import__(name)
after = state()
new_loggers = {n: c for n, c in after["loggers"].items() if n not in before["loggers"]}
untouched = {"level": logging.NOTSET, "propagate": True, "disabled": False, "handlers": [], "filters": []}
print(json.dumps({
    "modules": len(names),
    "changed": {key: [before[key], after[key]] for key in before if key != "loggers" and before[key] != after[key]},
    "changed_loggers": [n for n in before["loggers"] if before["loggers"][n] != after["loggers"][n]],
    "configured_new_loggers": [n for n, c in new_loggers.items() if c != untouched],
}))

# What building a worker and a Runner installs, and only once.
from syncworkers import PollerWorker, Runner
from syncworkers.observability.logging import URLLIB3_LOGGERS, URLRedactingFilter
workers = [PollerWorker("http://127.0.0.1:9/x", interval=60) for _ in range(2)]
Runner([]).stop()
print(json.dumps({
    "urllib3_filters": [sum(isinstance(f, URLRedactingFilter) for f in logging.getLogger(n).filters)
                        for n in URLLIB3_LOGGERS],
    "package_handlers": [type(h).__name__ for h in logging.getLogger("syncworkers").handlers],
    "metrics": sorted(n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith("syncworkers_")),
}))
for worker in workers:
    worker.close()
'''


def run_snapshot():
    done = subprocess.run([sys.executable, "-c", SNAPSHOT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT, "DJANGO_SETTINGS_MODULE": ""})
    assert done.returncode == 0, done.stderr
    imported, built = (json.loads(line) for line in done.stdout.splitlines())
    return imported, built


def test_importing_every_module_changes_no_logger_registry_thread_signal_or_hook():
    imported, _ = run_snapshot()

    assert imported["modules"] > 90  # every module of the package was imported
    assert imported["changed"] == {}
    assert imported["changed_loggers"] == [] and imported["configured_new_loggers"] == []


def test_building_workers_and_a_runner_installs_each_hook_once():
    _, built = run_snapshot()

    assert built["urllib3_filters"] == [1, 1, 1, 1, 1]
    # No NullHandler: where nobody configured logging, Python's last resort prints WARNING and above.
    assert built["package_handlers"] == []
    assert {"syncworkers_polls_total", "syncworkers_deliveries_total"} <= set(built["metrics"])
