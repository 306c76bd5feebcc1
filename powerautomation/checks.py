"""The project's own system checks (they run with runserver, migrate, check, qcluster)."""

from django.conf import settings
from django.core import checks


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
