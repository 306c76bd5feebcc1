"""Reads of deployments, shaped for the commands (and later the API)."""

from django.db.models import QuerySet

from deployments.models import COORDINATION_ACTIVE, COORDINATION_TERMINAL, Coordination, CoordinationTarget


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
