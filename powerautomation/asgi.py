"""ASGI entry point."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "powerautomation.settings")
application = get_asgi_application()

# AUTO_DEPLOY_ON_STARTUP: a web process that starts may trigger the version's deployment.
from deployments.startup import on_platform_start  # noqa: E402 (needs the loaded apps)
from powerautomation.checks import warn_if_debug  # noqa: E402

warn_if_debug("web")
on_platform_start("web")
