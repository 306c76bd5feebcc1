"""The one way a coordination or a target changes status.

Each move is checked against an explicit table, applied as a conditional UPDATE (so two
workers never both make the same move: the loser sees False), and written as exactly one
StageEvent in the same transaction.
"""

from collections.abc import Iterable
from functools import partial

from django.db import transaction
from django.utils import timezone

from deployments.models import (
    COORDINATION_TERMINAL,
    TARGET_TERMINAL,
    CallbackToken,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    Stage,
    StageEvent,
    TargetStatus as T,
)
from deployments.queueing import queue_coordination, queue_notification

_STOPS = {C.FAILED, C.CANCELLED}

COORDINATION_TRANSITIONS: dict[str, set[str]] = {
    C.PENDING: {C.EC2_DEPLOYING} | _STOPS,
    C.EC2_DEPLOYING: {C.EC2_COMPLETED} | _STOPS,
    C.EC2_COMPLETED: {C.LOCAL_TRIGGERING} | _STOPS,
    C.LOCAL_TRIGGERING: {C.LOCAL_DEPLOYING, C.LOCAL_COMPLETED} | _STOPS,
    C.LOCAL_DEPLOYING: {C.LOCAL_COMPLETED, C.AWAITING_APPROVAL} | _STOPS,
    # The canary wave has ended; an ADMIN's approval opens the next one. A failure here
    # is the coordinator's own (an error, the deadline), never a target's.
    C.AWAITING_APPROVAL: {C.LOCAL_DEPLOYING} | _STOPS,
    C.LOCAL_COMPLETED: {C.COMPLETED} | _STOPS,
    C.COMPLETED: set(),
    C.FAILED: set(),
    C.CANCELLED: set(),
}

TARGET_TRANSITIONS: dict[str, set[str]] = {
    T.PENDING: {T.TRIGGERING, T.FAILED, T.CANCELLED},
    T.TRIGGERING: {T.RUNNING, T.FAILED, T.CANCELLED, T.INTERRUPTED},
    T.RUNNING: {T.SUCCEEDED, T.FAILED, T.CANCELLED, T.INTERRUPTED},
    T.SUCCEEDED: set(),
    T.FAILED: set(),
    T.CANCELLED: set(),
    T.INTERRUPTED: set(),
}


class InvalidTransition(Exception):
    """A move the transition table does not allow: a bug, not an operational failure."""


def transition(
    obj: Coordination | CoordinationTarget,
    new_status: str,
    *,
    message: str = "",
    stage: str | None = None,
    data: dict | None = None,
    fields: dict | None = None,
) -> bool:
    """Move `obj` from its current status to `new_status`.

    Returns False, changing nothing, when the row's status in the database is no longer
    `obj.status` (another worker moved it first). `fields` are other columns written in
    the same UPDATE (exit code, reason, ...). On success `obj` is updated in memory too.
    """
    is_target = isinstance(obj, CoordinationTarget)
    table = TARGET_TRANSITIONS if is_target else COORDINATION_TRANSITIONS
    terminal = TARGET_TERMINAL if is_target else COORDINATION_TERMINAL
    old_status = obj.status
    if new_status not in table[old_status]:
        raise InvalidTransition(f"{type(obj).__name__} {obj}: {old_status} → {new_status} is not allowed")

    now = timezone.now()
    changes = {"status": new_status, **(fields or {})}
    if new_status in terminal:
        changes.setdefault("finished_at", now)
    if old_status == (T.PENDING if is_target else C.PENDING) and not obj.started_at:
        changes.setdefault("started_at", now)

    with transaction.atomic():
        moved = type(obj).objects.filter(pk=obj.pk, status=old_status).update(**changes)
        if not moved:
            return False
        target = obj if isinstance(obj, CoordinationTarget) else None
        if new_status in terminal:
            # An agent's callback credential ends with its target or its coordination: a
            # late or forged callback (after a cancel, a timeout, a result) finds no token.
            ended = {"target_id": obj.pk} if target else {"target__coordination_id": obj.pk}
            CallbackToken.objects.filter(**ended).delete()
        StageEvent.objects.create(
            coordination_id=target.coordination_id if target else obj.pk,
            target=target,
            environment_id=target.environment_id if target else "",
            stage=stage or (Stage.RUN if is_target else Stage.COORDINATION),
            old_status=old_status,
            new_status=new_status,
            message=message,
            data=data or {},
        )
    for name, value in changes.items():
        setattr(obj, name, value)
    if not is_target and new_status in COORDINATION_TERMINAL:
        _on_coordination_end(obj.pk)
    if isinstance(obj, CoordinationTarget) and new_status in TARGET_TERMINAL and obj.remote_environment_id:
        _wake_waiters(obj)
    return True


def _wake_waiters(target: CoordinationTarget) -> None:
    """A target has ended: coordinations whose targets wait for its machine (`queue`) and
    let go of their worker meanwhile get a task now, instead of at the reaper's next pass.
    One indexed query (`target_waiting`); a task that finds the lead at work just returns."""
    waiters = (
        CoordinationTarget.objects.filter(remote_environment_id=target.remote_environment_id, status=T.PENDING)
        .exclude(waiting_for="")
        .exclude(coordination_id=target.coordination_id)
        .values_list("coordination_id", "coordination__coordination_id")
        .distinct()
    )
    for pk, coordination_id in waiters:
        wake = partial(queue_coordination, coordination_pk=pk, coordination_id=coordination_id)
        transaction.on_commit(wake, robust=True)


def _on_coordination_end(coordination_pk: int) -> None:
    """Every end of a coordination (completed, failed, cancelled, closed out by the reaper)
    passes here once: queue its notification after commit (robust: a failure to queue is
    logged and never reaches the coordinator)."""
    transaction.on_commit(lambda: queue_notification(coordination_pk=coordination_pk), robust=True)


def cancel_not_started(
    targets: Iterable[CoordinationTarget], *, reason: str, code: str = "cancelled", data: dict | None = None
) -> int:
    """Cancel targets that never started (a cancel, a deadline, an error, the failure
    budget, a newer coordination), in one transaction; one that started meanwhile is left
    to whoever runs it. `code` is the targets' short reason. Returns how many it cancelled."""
    cancelled = 0
    with transaction.atomic():
        # In the claims' lock order (environment, then target): on PostgreSQL a cancel and a
        # claim over the same rows never wait for each other in a circle.
        for target in sorted(targets, key=lambda target: (target.remote_environment_id or 0, target.pk)):
            cancelled += transition(
                target,
                T.CANCELLED,
                stage=Stage.TRIGGER,
                message=f"not started: {reason}",
                data={"reason": code, **(data or {})},
                fields={"reason": code, "error": reason, "waiting_for": ""},
            )
    return cancelled


def note(
    coordination: Coordination,
    message: str,
    *,
    stage: str,
    target: CoordinationTarget | None = None,
    data: dict | None = None,
) -> StageEvent:
    """Record a step that changes no status (a retry, a health check result)."""
    return StageEvent.objects.create(
        coordination=coordination,
        target=target,
        environment_id=target.environment_id if target else "",
        stage=stage,
        message=message,
        data=data or {},
    )
