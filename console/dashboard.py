"""The dashboard at the top of the admin's front page: environment health grid, active
coordinations with live progress, recent history, latest checks.

The page and the fragments its script (static/console/live.js) polls for every 2 s are rendered by
the same templates, so nothing is drawn twice (once in Python, once in JavaScript)."""

from dataclasses import dataclass

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.admin_roles import can_operate
from console.presenters import (
    HEALTH_TONE,
    TARGET_TONE,
    agent_presence,
    coordination_url,
    format_duration,
    progress_summary,
    triggered_by_label,
)
from deployments.models import Coordination
from deployments.selectors import (
    annotated_progress,
    coordinations_active,
    coordinations_finished,
    coordinations_with_progress,
    environment_check_results,
    environments_with_last_outcome,
)

ACTIVE_LIMIT = 50
RECENT_LIMIT = 10
CHECK_RESULTS_SHOWN = 3


@dataclass
class CoordinationRow:
    """A coordination as the dashboard and the lists show it."""

    coordination: Coordination
    progress: dict
    url: str

    @property
    def summary(self) -> str:
        return progress_summary(self.progress)

    @property
    def duration(self) -> str:
        return format_duration(self.coordination.duration_seconds)

    @property
    def triggered_by(self) -> str:
        return triggered_by_label(self.coordination)


def _rows(queryset) -> list[CoordinationRow]:
    return [CoordinationRow(c, annotated_progress(c), coordination_url(c)) for c in queryset]


def _environment_tiles(environments) -> list[dict]:
    tiles = []
    for environment in environments:
        target = environment.last_target
        tiles.append(
            {
                "environment": environment,
                "url": reverse("admin:environments_remoteenvironment_change", args=[environment.pk]),
                "tone": HEALTH_TONE.get(environment.last_health, "waiting"),
                "last_target": target,
                "last_tone": TARGET_TONE[target.status] if target else "",
                "agent": agent_presence(environment),  # polling environments only; from the row itself
            }
        )
    return tiles


def _check_summaries(results: list[dict]) -> list[dict]:
    summaries = []
    for result in results[:CHECK_RESULTS_SHOWN]:
        reports = result["reports"]
        summaries.append(
            {
                **result,
                "kind": "Connectivity preflight" if result["connectivity"] else "Health check",
                "ok": sum(1 for report in reports if report.get("ok") is True),
                "failed": [report for report in reports if report.get("ok") is False],
                "skipped": sum(1 for report in reports if report.get("ok") is None),
            }
        )
    return summaries


def dashboard_context(request) -> dict:
    """Everything the dashboard shows. A constant number of queries, whatever the number of
    environments and coordinations."""
    environments = environments_with_last_outcome()
    active = coordinations_with_progress(coordinations_active()).order_by("created_at", "id")[:ACTIVE_LIMIT]
    recent = coordinations_with_progress(coordinations_finished())[:RECENT_LIMIT]
    return {
        "tiles": _environment_tiles(environments),
        "active_rows": _rows(active),
        "recent_rows": _rows(recent),
        "checks": _check_summaries(environment_check_results(limit=CHECK_RESULTS_SHOWN)),
        "enabled_environments": [environment for environment in environments if environment.enabled],
        "can_operate": can_operate(request),
        "generated_at": timezone.now(),
    }


DASHBOARD_FRAGMENTS = {
    "health": "admin/deployments/dashboard/_health.html",
    "active": "admin/deployments/dashboard/_active.html",
    "recent": "admin/deployments/dashboard/_recent.html",
    "checks": "admin/deployments/dashboard/_checks.html",
}


def dashboard_fragments(request, context: dict | None = None) -> dict[str, str]:
    context = context or dashboard_context(request)
    return {
        name: render_to_string(template, context, request=request) for name, template in DASHBOARD_FRAGMENTS.items()
    }


def dashboard_live(request) -> dict:
    """The dashboard's poll: its fragments, and the active and recent coordinations as data."""
    context = dashboard_context(request)
    return {
        "generated_at": context["generated_at"].isoformat(),
        "fragments": dashboard_fragments(request, context),
        "coordinations": {
            row.coordination.coordination_id: {"status": row.coordination.status, "progress": row.progress}
            for row in context["active_rows"] + context["recent_rows"]
        },
    }
