"""The project's own system checks (they run with runserver, migrate, check, qcluster)."""

import logging

from django.conf import settings
from django.core import checks

logger = logging.getLogger(__name__)


def debug_is_off(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """DJANGO_DEBUG=true is for a developer's machine: error pages then show code, settings
    and the request to whoever causes an error."""
    if not settings.DEBUG:
        return []
    return [
        checks.Warning(
            "DEBUG is on (DJANGO_DEBUG=true): error pages show source code, settings and requests "
            "to anyone who triggers an error.",
            hint="Never on a platform others can reach: unset DJANGO_DEBUG.",
            id="powerautomation.W001",
        )
    ]


def warn_if_debug(process: str) -> None:
    """The web process runs no system checks (gunicorn, the WSGI entry point): it says so
    in its log at start instead."""
    for message in debug_is_off(None):
        logger.warning("%s process: %s %s (%s)", process, message.msg, message.hint, message.id)
