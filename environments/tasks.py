"""django-q2 tasks: take ids, load rows, call one service."""

from django.utils import timezone

from environments.models import RemoteEnvironment
from environments.selectors import environments_for_scheduled_health_check
from environments.services import environments_check


def check_environments_health() -> int:
    """Scheduled: health-check every enabled environment that has a health_check_url."""
    environments = environments_for_scheduled_health_check()
    environments_check(environments=environments)
    return len(environments)


def check_environments_now(environment_pks: list[int], connectivity: bool) -> dict:
    """Queued from the admin: health-check (or preflight) these environments now. The
    returned reports are the task's result, which the admin shows."""
    environments = list(RemoteEnvironment.objects.filter(pk__in=environment_pks).order_by("environment_id"))
    reports = environments_check(environments=environments, connectivity=connectivity)
    return {
        "connectivity": connectivity,
        "checked_at": timezone.now().isoformat(),
        "reports": [report.as_json() for report in reports],
    }
