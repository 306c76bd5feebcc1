"""django-q2 tasks: take ids, load rows, call one service."""

from environments.models import RemoteEnvironment
from environments.services import environments_check


def check_environments_health() -> int:
    """Scheduled: health-check every enabled environment that has a health_check_url."""
    environments = list(RemoteEnvironment.objects.filter(enabled=True).exclude(health_check_url=""))
    environments_check(environments=environments)
    return len(environments)
