"""What the admin shows of deployments: the dashboard at the top of the admin (environment
health grid, active coordinations with live progress, recent history, latest checks), a
coordination's page, and the badges both use.

The page and the fragments its script (static/deployments/live.js) polls for every 2 s are rendered by the same
templates, so nothing is drawn twice (once in Python, once in JavaScript)."""

from dataclasses import dataclass

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin_roles import can_operate
from deployments.models import (
    COORDINATION_TERMINAL,
    TARGET_ACTIVE,
    Coordination,
    CoordinationStatus,
    CoordinationTarget,
    StageEvent,
    TargetStatus,
)
from deployments.selectors import (
    annotated_progress,
    coordination_events,
    coordinations_active,
    coordinations_finished,
    coordinations_with_progress,
    environment_check_results,
    environments_with_last_outcome,
    target_progress,
)
from deployments.services import RETRYABLE_TARGET_STATUSES
from deployments.stage_log import format_event
from environments.models import Health

ACTIVE_LIMIT = 50
RECENT_LIMIT = 10
CHECK_RESULTS_SHOWN = 3
TIMELINE_LIMIT = 2000
LIVE_EVENTS_LIMIT = 500

# --- Badges -----------------------------------------------------------------------------------

_COORDINATION_TONE = {
    CoordinationStatus.PENDING: "waiting",
    CoordinationStatus.COMPLETED: "good",
    CoordinationStatus.FAILED: "bad",
    CoordinationStatus.CANCELLED: "stopped",
}
_TARGET_TONE = {
    TargetStatus.PENDING: "waiting",
    TargetStatus.TRIGGERING: "busy",
    TargetStatus.RUNNING: "busy",
    TargetStatus.SUCCEEDED: "good",
    TargetStatus.FAILED: "bad",
    TargetStatus.INTERRUPTED: "bad",
    TargetStatus.CANCELLED: "stopped",
}
_HEALTH_TONE = {Health.HEALTHY: "good", Health.UNHEALTHY: "bad", Health.UNKNOWN: "waiting"}


def _badge(tone: str, label: str, value: str, title: str = ""):
    return format_html(
        '<span class="pa-badge pa-tone-{}" data-status="{}" title="{}">{}</span>', tone, value, title, label
    )


def coordination_badge(status: str):
    tone = _COORDINATION_TONE.get(status, "busy")  # every stage in between is work going on
    return _badge(tone, CoordinationStatus(status).label, status)


def target_badge(status: str, reason: str = ""):
    label = TargetStatus(status).label + (f": {reason}" if reason and reason != status else "")
    return _badge(_TARGET_TONE[status], label, status)


def health_badge(health: str, title: str = ""):
    return _badge(_HEALTH_TONE.get(health, "waiting"), Health(health).label, health, title)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def progress_summary(progress: dict[str, int]) -> str:
    """'2 of 3 done · 1 failed · 1 running' (done / failed / running of total)."""
    parts = [f"{progress['done']} of {progress['total']} done"]
    if progress["failed"]:
        parts.append(f"{progress['failed']} failed")
    if progress["cancelled"]:
        parts.append(f"{progress['cancelled']} cancelled")
    if progress["running"]:
        parts.append(f"{progress['running']} running")
    if progress["pending"]:
        parts.append(f"{progress['pending']} waiting")
    return " · ".join(parts)


def progress_bar(progress: dict[str, int]):
    return render_to_string("admin/deployments/_progress.html", {"progress": progress, "segments": _segments(progress)})


def _segments(progress: dict[str, int]) -> list[dict]:
    total = progress["total"] or 1
    tones = (("succeeded", "good"), ("failed", "bad"), ("cancelled", "stopped"), ("running", "busy"))
    return [
        {"bucket": bucket, "tone": tone, "count": progress[bucket], "percent": round(100 * progress[bucket] / total, 2)}
        for bucket, tone in tones
        if progress[bucket]
    ]


def triggered_by_label(coordination: Coordination) -> str:
    user = coordination.triggered_by_user
    return f"{coordination.get_triggered_by_display()}" + (f" ({user.get_username()})" if user else "")


# --- The dashboard ----------------------------------------------------------------------------


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


def coordination_url(coordination: Coordination) -> str:
    return reverse("admin:deployments_coordination_change", args=[coordination.pk])


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
                "tone": _HEALTH_TONE.get(environment.last_health, "waiting"),
                "last_target": target,
                "last_tone": _TARGET_TONE[target.status] if target else "",
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


# --- A coordination's page --------------------------------------------------------------------


def _finished(coordination: Coordination, targets: list[CoordinationTarget]) -> bool:
    """As the events endpoint: ended, and every environment has ended too (a cancelled
    coordination still waits for the environments it hangs up)."""
    return coordination.status in COORDINATION_TERMINAL and not any(t.status in TARGET_ACTIVE for t in targets)


def _can_retry(coordination: Coordination, progress: dict) -> bool:
    return coordination.status in COORDINATION_TERMINAL and bool(progress["failed"] or progress["cancelled"])


def _event_rows(coordination: Coordination, events: list[StageEvent]) -> list[dict]:
    rows = []
    for event in events:
        event.coordination = coordination  # format_event reads it; no query per event
        tone = _TARGET_TONE.get(event.new_status) if event.environment_id else _COORDINATION_TONE.get(event.new_status)
        rows.append({"event": event, "line": format_event(event), "tone": tone or ""})
    return rows


def _target_rows(targets: list[CoordinationTarget]) -> list[dict]:
    rows = []
    for target in targets:
        duration = None
        if target.started_at:
            duration = ((target.finished_at or timezone.now()) - target.started_at).total_seconds()
        rows.append(
            {
                "target": target,
                "duration": format_duration(duration),
                "host_key_problem": target.reason in ("host_key_unknown", "host_key_changed"),
                "environment_url": (
                    reverse("admin:environments_remoteenvironment_change", args=[target.remote_environment_id])
                    if target.remote_environment_id
                    else ""
                ),
            }
        )
    return rows


def coordination_page_context(request, coordination: Coordination) -> dict:
    """The coordination (from `coordination_detail`: every target in full), its
    environments' outcomes with output tails, and its event timeline."""
    targets = list(coordination.targets.all())
    progress = target_progress(targets)
    events = coordination_events(coordination=coordination, limit=TIMELINE_LIMIT + 1)
    return {
        "coordination": coordination,
        "progress": progress,
        "target_rows": _target_rows(targets),
        "event_rows": _event_rows(coordination, events[:TIMELINE_LIMIT]),
        "timeline_truncated": len(events) > TIMELINE_LIMIT,
        "next_after": events[:TIMELINE_LIMIT][-1].id if events else 0,
        "finished": _finished(coordination, targets),
        "can_operate": can_operate(request),
        "can_cancel": coordination.status not in COORDINATION_TERMINAL,
        "can_retry": _can_retry(coordination, progress),
        "retryable_statuses": RETRYABLE_TARGET_STATUSES,
        "retries": list(coordination.retries.order_by("created_at")),
    }


def coordination_live(request, coordination: Coordination, *, after: int) -> dict:
    """A coordination page's poll: its status and progress, the events after `after` as
    timeline rows, and the rows of the environments those events are about (with their
    output tail, so each ended environment's output is sent once)."""
    coordination.refresh_from_db(fields=["status", "error", "started_at", "finished_at"])
    summaries = list(coordination.targets.only("id", "coordination", "status"))
    events = coordination_events(coordination=coordination, after=after, limit=LIVE_EVENTS_LIMIT + 1)
    page = events[:LIVE_EVENTS_LIMIT]
    changed = {event.target_id for event in page if event.target_id}
    targets = list(coordination.targets.filter(pk__in=changed).order_by("environment_id")) if changed else []
    progress = target_progress(summaries)
    context = {"coordination": coordination, "can_operate": can_operate(request)}
    render = lambda template, extra: render_to_string(template, {**context, **extra}, request=request)  # noqa: E731
    return {
        "status": coordination.status,
        "terminal": coordination.status in COORDINATION_TERMINAL,
        "finished": _finished(coordination, summaries),
        "can_retry": _can_retry(coordination, progress),
        "progress": progress,
        "status_html": str(coordination_badge(coordination.status)),
        "progress_html": progress_bar(progress),
        "progress_summary": progress_summary(progress),
        "duration": format_duration(coordination.duration_seconds),
        "error": coordination.error,
        "events_html": render(
            "admin/deployments/coordination/_event_rows.html", {"event_rows": _event_rows(coordination, page)}
        ),
        "targets": {
            row["target"].environment_id: render("admin/deployments/coordination/_target_row.html", {"row": row})
            for row in _target_rows(targets)
        },
        "next_after": page[-1].id if page else after,
        "has_more": len(events) > LIVE_EVENTS_LIMIT,
    }
