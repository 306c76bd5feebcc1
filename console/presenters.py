"""How the console draws deployments and environments: status badges and their tones,
progress bars and summaries, durations, who triggered a run, a rollout in words, and links
to a coordination. The admin's columns, the dashboard, the Deploy form and a coordination's
page all use these."""

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html

from deployments.models import Coordination, CoordinationStatus, TargetStatus
from environments.connectors.polling import ONLINE_INTERVALS, is_online, last_seen
from environments.models import ConnectionMethod, Health
from environments.rollout import APPROVAL, QUEUE, REJECT, SUPERSEDE

COORDINATION_TONE = {
    CoordinationStatus.PENDING: "waiting",
    # Stands out: nothing moves until an ADMIN acts.
    CoordinationStatus.AWAITING_APPROVAL: "attention",
    CoordinationStatus.COMPLETED: "good",
    CoordinationStatus.FAILED: "bad",
    CoordinationStatus.CANCELLED: "stopped",
}
TARGET_TONE = {
    TargetStatus.PENDING: "waiting",
    TargetStatus.TRIGGERING: "busy",
    TargetStatus.RUNNING: "busy",
    TargetStatus.SUCCEEDED: "good",
    TargetStatus.FAILED: "bad",
    TargetStatus.INTERRUPTED: "bad",
    TargetStatus.CANCELLED: "stopped",
}
HEALTH_TONE = {Health.HEALTHY: "good", Health.UNHEALTHY: "bad", Health.UNKNOWN: "waiting"}


def _badge(tone: str, label: str, value: str, title: str = ""):
    return format_html(
        '<span class="pa-badge pa-tone-{}" data-status="{}" title="{}">{}</span>', tone, value, title, label
    )


def coordination_badge(status: str):
    tone = COORDINATION_TONE.get(status, "busy")  # every stage in between is work going on
    return _badge(tone, CoordinationStatus(status).label, status)


def target_badge(status: str, reason: str = ""):
    label = TargetStatus(status).label + (f": {reason}" if reason and reason != status else "")
    return _badge(TARGET_TONE[status], label, status)


def health_badge(health: str, title: str = ""):
    return _badge(HEALTH_TONE.get(health, "waiting"), Health(health).label, health, title)


def agent_presence(environment) -> dict | None:
    """A polling environment's agent as the admin and the dashboard show it: online when
    seen within 3 × its poll interval, and "agent last seen N s ago"; None for the other
    connection methods. Reads only columns of the environment row."""
    if environment.connection_method != ConnectionMethod.POLLING:
        return None
    online = is_online(environment.agent_seen_at, environment.poll_interval)
    return {
        "online": online,
        "tone": "good" if online else "bad",
        "label": "online" if online else "offline",
        "last_seen": last_seen(environment.agent_seen_at),
        "limit": ONLINE_INTERVALS * environment.poll_interval,
    }


def agent_badge(environment):
    """'online · agent last seen 3 s ago' with a badge; '–' for other connection methods."""
    presence = agent_presence(environment)
    if presence is None:
        return "–"
    title = f"online: seen within {presence['limit']} s ({ONLINE_INTERVALS} × its poll interval)"
    return format_html(
        "{} {}", _badge(presence["tone"], presence["label"], presence["label"], title), presence["last_seen"]
    )


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


def coordination_url(coordination: Coordination) -> str:
    return reverse("admin:deployments_coordination_change", args=[coordination.pk])


# --- A rollout in words ---------------------------------------------------------------------

CONCURRENCY_TEXT = {
    QUEUE: "waits for the run holding it",
    REJECT: "refuses the whole deployment",
    SUPERSEDE: "cancels the older run on it",
}


def pause_text(value) -> str:
    """A pause_after_first_batch value in words ("" for none)."""
    if value == APPROVAL:
        return "wait for an ADMIN's approval"
    return f"pause {value} s" if value else ""


def budget_text(budget: int | None) -> str:
    if budget is None:
        return ""
    return "stops at the first failure" if budget == 0 else f"stops once more than {budget} fail"


def rollout_notes(plan: dict) -> list[str]:
    """What a resolved rollout (the policy, its `waves` and `failure_budget`) does beyond
    splitting into waves, as the runner applies it: after the first wave its own pause
    (or, unset, the pause between waves), the pause between later waves, the budget."""
    waves = plan.get("waves") or []
    first, between = plan.get("pause_after_first_batch"), plan.get("batch_pause_seconds") or 0
    notes = []
    if len(waves) > 1:
        if first == APPROVAL:
            notes.append("approval after the first")
        elif first or between:
            notes.append(f"a {first or between} s pause after the first")
        if between and len(waves) > 2:
            notes.append(f"{between} s between later waves")
    elif first == APPROVAL:
        notes.append("one wave, so no approval")
    if budget := budget_text(plan.get("failure_budget")):
        notes.append(budget)
    return notes


def selection_summary(count: int, plan: dict) -> str:
    """'Selects 20 environments in 3 waves: 1, 5, 14; approval after the first'."""
    waves = plan.get("waves") or []
    head = f"Selects {count} environment{'' if count == 1 else 's'}"
    if len(waves) > 1:
        head += f" in {len(waves)} waves: {', '.join(str(size) for size in waves)}"
    return "; ".join([head, *rollout_notes(plan)])
