"""Reads of deployments, shaped for the commands and the API."""

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from deployments.models import (
    COORDINATION_ACTIVE,
    COORDINATION_TERMINAL,
    TARGET_TERMINAL,
    Coordination,
    CoordinationTarget,
    StageEvent,
    TargetStatus,
)
from environments.models import SECRET_FIELDS, RemoteEnvironment


def _time(value) -> str | None:
    return value.isoformat() if value else None


def target_as_json(target: CoordinationTarget) -> dict:
    return {
        "environment_id": target.environment_id,
        "status": target.status,
        "reason": target.reason,
        "exit_code": target.exit_code,
        "attempts": target.attempts,
        "started_at": _time(target.started_at),
        "finished_at": _time(target.finished_at),
        "error": target.error,
        "output_tail": target.output_tail,
    }


def coordination_as_json(coordination: Coordination, *, targets: list[CoordinationTarget] | None = None) -> dict:
    if targets is None:
        targets = list(coordination.targets.order_by("environment_id"))
    counts: dict[str, int] = {}
    for target in targets:
        counts[target.status] = counts.get(target.status, 0) + 1
    return {
        "coordination_id": coordination.coordination_id,
        "status": coordination.status,
        "triggered_by": coordination.triggered_by,
        "triggered_by_user": coordination.triggered_by_user.get_username() if coordination.triggered_by_user else None,
        "version": coordination.version,
        "ec2": {"instance_id": coordination.ec2_instance_id, "public_ip": coordination.ec2_public_ip},
        "ec2_deployment_config": coordination.ec2_deployment_config,
        "error": coordination.error,
        "created_at": _time(coordination.created_at),
        "started_at": _time(coordination.started_at),
        "finished_at": _time(coordination.finished_at),
        "duration_seconds": coordination.duration_seconds,
        "counts": counts,
        "environments": [target_as_json(target) for target in targets],
    }


def coordinations_active() -> QuerySet[Coordination]:
    return Coordination.objects.filter(status__in=COORDINATION_ACTIVE).select_related("triggered_by_user")


def coordinations_finished() -> QuerySet[Coordination]:
    return (
        Coordination.objects.filter(status__in=COORDINATION_TERMINAL)
        .select_related("triggered_by_user")
        .order_by("-created_at", "-id")
    )


# --- The API's reads: a constant number of queries whatever the number of rows -------------

# Target columns a list shows; the output tail (up to 64 KiB each) only in full records.
TARGET_SUMMARY_FIELDS = ("id", "coordination", "environment_id", "status", "reason", "exit_code", "finished_at")


def target_progress(targets) -> dict[str, int]:
    """How far a coordination's targets are: every target counts in exactly one of
    succeeded, failed (failed or interrupted), cancelled, running (triggering or
    running) and pending; `done` is the ones that have ended."""
    progress = dict.fromkeys(("total", "done", "succeeded", "failed", "cancelled", "running", "pending"), 0)
    buckets = {
        TargetStatus.SUCCEEDED: "succeeded",
        TargetStatus.FAILED: "failed",
        TargetStatus.INTERRUPTED: "failed",
        TargetStatus.CANCELLED: "cancelled",
        TargetStatus.TRIGGERING: "running",
        TargetStatus.RUNNING: "running",
        TargetStatus.PENDING: "pending",
    }
    for target in targets:
        progress["total"] += 1
        progress[buckets[target.status]] += 1
        if target.status in TARGET_TERMINAL:
            progress["done"] += 1
    return progress


def coordinations_listed(queryset: QuerySet[Coordination]) -> QuerySet[Coordination]:
    """`queryset` with what a list shows: user, retry link and target summaries, in
    two queries whatever its length."""
    summaries = CoordinationTarget.objects.only(*TARGET_SUMMARY_FIELDS).order_by("environment_id")
    return queryset.select_related("triggered_by_user", "retry_of").prefetch_related(
        Prefetch("targets", queryset=summaries)
    )


def coordination_detail(coordination_id: str) -> Coordination | None:
    """One coordination with every target in full, or None."""
    return (
        Coordination.objects.select_related("triggered_by_user", "retry_of")
        .prefetch_related(Prefetch("targets", queryset=CoordinationTarget.objects.order_by("environment_id")))
        .filter(coordination_id=coordination_id)
        .first()
    )


def coordination_events(*, coordination: Coordination, after: int = 0, limit: int = 500) -> list[StageEvent]:
    """The coordination's events with an id above `after`, oldest first (index
    `stageevent_cursor`)."""
    return list(StageEvent.objects.filter(coordination=coordination, id__gt=after).order_by("id")[:limit])


def environments_with_last_outcome() -> list[RemoteEnvironment]:
    """Every environment, secrets left unread, each with `last_target`: its most recent
    target that ended (with that target's coordination), or None. Three queries."""
    last_ended = (
        CoordinationTarget.objects.filter(remote_environment=OuterRef("pk"), status__in=TARGET_TERMINAL)
        .order_by("-id")
        .values("id")[:1]
    )
    environments = list(RemoteEnvironment.objects.defer(*SECRET_FIELDS).annotate(last_target_id=Subquery(last_ended)))
    wanted = [environment.last_target_id for environment in environments if environment.last_target_id]
    ended = CoordinationTarget.objects.filter(pk__in=wanted).select_related("coordination")
    ended = ended.only(*TARGET_SUMMARY_FIELDS, "coordination__coordination_id", "coordination__status")
    targets = {target.pk: target for target in ended}
    for environment in environments:
        environment.last_target = targets.get(environment.last_target_id)
    return environments
