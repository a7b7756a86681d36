"""The project's ASGI application (gunicorn -k asgi tests.apps.djangoproject.asgi:application)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoproject.settings")
application = get_asgi_application()
