"""The project's WSGI application (gunicorn tests.apps.djangoproject.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoproject.settings")
application = get_wsgi_application()
