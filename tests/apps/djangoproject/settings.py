"""A small Django project for the Django tests: the outbox lives in the app's own database (SQLite, or
PostgreSQL with DJANGO_PG_URL), the admin shows it; ``tests_project.py`` holds the project's own tests."""

import json
import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.apps.djangoproject.urls"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
                  "syncworkers.contrib.django",
                  "tests.apps.djangoproject"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware", "django.middleware.csrf.CsrfViewMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                 "django.contrib.auth.context_processors.auth",
                                                 "django.contrib.messages.context_processors.messages"]}}]
STATIC_URL = "/static/"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3",
                "NAME": os.environ.get("DJANGO_DB", "/tmp/syncworkers-django-test.sqlite3")},
}
if os.environ.get("DJANGO_PG_URL"):  # postgresql://user@host:port/db[?options=-csearch_path%3Dschema]
    from urllib.parse import parse_qsl, urlsplit

    _pg = urlsplit(os.environ["DJANGO_PG_URL"])
    DATABASES["default"] = {"ENGINE": "django.db.backends.postgresql", "NAME": _pg.path.lstrip("/"),
                            "USER": _pg.username or "", "PASSWORD": _pg.password or "",
                            "HOST": _pg.hostname, "PORT": str(_pg.port or ""),
                            "OPTIONS": dict(parse_qsl(_pg.query))}
SYNCWORKERS = {
    "OUTBOX": "default",
    "BASE_URL": os.environ.get("DJANGO_HOOKS_BASE_URL", "http://127.0.0.1:9"),
}
RECEIVER_SECRET = "whsec_dGVzdC1yZWNlaXZlci1zZWNyZXQta2V5LTEyMzQ="
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
if os.environ.get("DJANGO_SYNCWORKERS"):  # more SYNCWORKERS entries, as JSON (the boot and check tests)
    SYNCWORKERS.update(json.loads(os.environ["DJANGO_SYNCWORKERS"]))
