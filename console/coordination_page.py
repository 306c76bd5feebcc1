"""A coordination's page in the admin: its rollout and waves, its environments' outcomes
with output tails and its event timeline, and the live JSON its script
(static/console/live.js) polls for, rendered by the same templates as the page."""

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.admin_roles import can_operate
from console.presenters import (
    COORDINATION_TONE,
    TARGET_TONE,
    coordination_badge,
    coordination_url,
    format_duration,
    progress_bar,
    progress_summary,
)
from console.rollout_panel import rollout_context
from deployments.models import (
    COORDINATION_TERMINAL,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    StageEvent,
    TargetStatus as T,
)
from deployments.selectors import coordination_events, coordination_finished, target_progress
from deployments.services import RETRYABLE_TARGET_STATUSES
from deployments.stage_log import format_event

TIMELINE_LIMIT = 2000
LIVE_EVENTS_LIMIT = 500
ROLLOUT_TEMPLATE = "admin/deployments/coordination/_rollout.html"
# What the live view re-reads of the coordination on each poll.
LIVE_FIELDS = ["status", "error", "started_at", "finished_at", "wave", "next_wave_at", "approved_at", "approved_by"]


def _can_retry(coordination: Coordination, progress: dict) -> bool:
    return coordination.status in COORDINATION_TERMINAL and bool(progress["failed"] or progress["cancelled"])


def _event_rows(coordination: Coordination, events: list[StageEvent]) -> list[dict]:
    rows = []
    for event in events:
        event.coordination = coordination  # format_event reads it; no query per event
        tone = TARGET_TONE.get(event.new_status) if event.environment_id else COORDINATION_TONE.get(event.new_status)
        rows.append({"event": event, "line": format_event(event), "tone": tone or ""})
    return rows


def _can_approve(coordination: Coordination) -> bool:
    return coordination.status == C.AWAITING_APPROVAL


def _waiting_for_urls(targets: list[CoordinationTarget]) -> dict[str, str]:
    """The pages of the coordinations pending targets wait for (`queue`): one query."""
    waited = {target.waiting_for for target in targets if target.waiting_for and target.status == T.PENDING}
    if not waited:
        return {}
    holders = Coordination.objects.filter(coordination_id__in=waited).only("pk", "coordination_id")
    return {holder.coordination_id: coordination_url(holder) for holder in holders}


def _target_rows(targets: list[CoordinationTarget]) -> list[dict]:
    waiting_for_urls = _waiting_for_urls(targets)
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
                "waiting_for": target.waiting_for if target.status == T.PENDING else "",
                "waiting_for_url": waiting_for_urls.get(target.waiting_for, ""),
                "environment_url": (
                    reverse("admin:environments_remoteenvironment_change", args=[target.remote_environment_id])
                    if target.remote_environment_id
                    else ""
                ),
            }
        )
    return rows


def coordination_page_context(request, coordination: Coordination) -> dict:
    """The coordination, its rollout and waves, its environments' outcomes with output
    tails, and its event timeline."""
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
        "finished": coordination_finished(coordination, targets=targets),
        "can_operate": can_operate(request),
        "can_cancel": coordination.status not in COORDINATION_TERMINAL,
        "can_retry": _can_retry(coordination, progress),
        "can_approve": _can_approve(coordination),
        "rollout": rollout_context(coordination, targets),
        "retryable_statuses": RETRYABLE_TARGET_STATUSES,
        "retries": list(coordination.retries.order_by("created_at")),
    }


def coordination_live(request, coordination: Coordination, *, after: int) -> dict:
    """A coordination page's poll: its status, progress and rollout panel, whether it
    may be approved, the events after `after` as timeline rows, and the rows of the
    environments those events are about (with their output tail, so each ended
    environment's output is sent once)."""
    coordination.refresh_from_db(fields=LIVE_FIELDS)
    summaries = list(coordination.targets.only("id", "coordination", "status", "wave"))
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
        "finished": coordination_finished(coordination, targets=summaries),
        "can_retry": _can_retry(coordination, progress),
        "can_approve": _can_approve(coordination),
        "progress": progress,
        "status_html": str(coordination_badge(coordination.status)),
        "progress_html": progress_bar(progress),
        "progress_summary": progress_summary(progress),
        "duration": format_duration(coordination.duration_seconds),
        "error": coordination.error,
        "rollout_html": render(ROLLOUT_TEMPLATE, {"rollout": rollout_context(coordination, summaries)}),
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
