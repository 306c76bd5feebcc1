"""WSGI entry point (gunicorn powerautomation.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "powerautomation.settings")
application = get_wsgi_application()
