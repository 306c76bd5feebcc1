"""WSGI entry point (gunicorn powerautomation.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "powerautomation.settings")
application = get_wsgi_application()

# AUTO_DEPLOY_ON_STARTUP: a web process that starts may trigger the version's deployment.
from deployments.startup import on_platform_start  # noqa: E402 (needs the loaded apps)
from powerautomation.checks import warn_if_debug  # noqa: E402

warn_if_debug("web")
on_platform_start("web")
