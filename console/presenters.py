"""How the console draws deployments and environments: status badges and their tones,
progress bars and summaries, durations, who triggered a run, and links to a coordination.
The admin's columns, the dashboard and a coordination's page all use these."""

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html

from deployments.models import Coordination, CoordinationStatus, TargetStatus
from environments.models import Health

COORDINATION_TONE = {
    CoordinationStatus.PENDING: "waiting",
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
