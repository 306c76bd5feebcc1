"""What the delivery threads report, recorded by the main thread: a script started, a
retry, a health check, an outcome. Each report is one transition or one note."""

import logging

from deployments.models import Coordination, CoordinationTarget, Stage, TargetStatus as T
from deployments.runner.delivery import Outcome
from deployments.runner.detached import target_let_go
from deployments.runner.output import OutputBook
from deployments.runner.stopping import StopKind, Stopping
from deployments.transitions import note, transition
from environments.connectors import ConnectorError
from environments.connectors.http import RESPONSE_EXCERPT
from environments.services import environment_record_health

logger = logging.getLogger(__name__)


def record_started(target: CoordinationTarget, detail: str) -> None:
    transition(target, T.RUNNING, stage=Stage.RUN, message=detail)


def record_retry(
    coordination: Coordination, target: CoordinationTarget, attempt: int, error: ConnectorError, delay: float
) -> None:
    CoordinationTarget.objects.filter(pk=target.pk).update(attempts=attempt + 1)
    target.attempts = attempt + 1
    note(
        coordination,
        f"attempt {attempt} failed: {error.message}; retrying in {delay:g} s",
        stage=Stage.TRIGGER,
        target=target,
        data={**error.data, "attempt": attempt, "reason": error.reason, "next_attempt": attempt + 1},
    )


def record_health(
    coordination: Coordination, target: CoordinationTarget, healthy: bool, detail: str, latency_ms: int | None
) -> None:
    if target.remote_environment_id:
        environment_record_health(
            environment_pk=target.remote_environment_id, healthy=healthy, detail=detail, latency_ms=latency_ms
        )
    note(
        coordination,
        f"{'healthy' if healthy else 'unhealthy'}: {detail}",
        stage=Stage.VERIFY,
        target=target,
        data={"healthy": healthy},
    )


def record_outcome(target: CoordinationTarget, outcome: Outcome, *, stopping: Stopping, output: OutputBook) -> None:
    """The target's end, with the output that arrived since the last write."""
    outcome = as_stopped(outcome, stopping)
    fields = {"reason": outcome.reason, "exit_code": outcome.exit_code}
    if outcome.status != T.SUCCEEDED:
        fields["error"] = outcome.message
        fields["response_excerpt"] = outcome.data.get(RESPONSE_EXCERPT, "")
    output_fields = output.fields_for(target, final=True)
    fields.update(output_fields)
    moved = transition(
        target,
        outcome.status,
        stage=Stage.VERIFY if outcome.reason == "health_check_failed" else Stage.RUN,
        message=outcome.message,
        data={**outcome.data, "exit_code": outcome.exit_code, "reason": outcome.reason},
        fields=fields,
    )
    if not moved:
        logger.warning(
            "%s: outcome %s not recorded, status moved on",
            target.environment_id,
            outcome.status,
            extra={"environment_id": target.environment_id},
        )
        if output_fields:  # the output is kept all the same
            CoordinationTarget.objects.filter(pk=target.pk).update(**output_fields)


def record_end(target: CoordinationTarget, exit_code: int | None, output: OutputBook) -> bool:
    """A detached run ended: its exit code with the output up to its end (committed with
    the batch; then its run directory may go). False when another worker records it now."""
    fields = output.fields_for(target, final=False)
    if target.pk in output.lost:
        return False
    fields["exit_code"] = exit_code
    target.exit_code = exit_code
    CoordinationTarget.objects.filter(pk=target.pk).update(**fields)
    return True


def record_handed_over(target: CoordinationTarget, outcome: Outcome, *, output: OutputBook, lease) -> None:
    """This worker let go of a detached run (shutting down): its output so far is kept, and
    the next worker re-attaches to it."""
    fields = output.fields_for(target, final=False)
    target_let_go(target, lease=lease, why="let go by a worker shutting down", fields=fields)


def as_stopped(outcome: Outcome, stopping: Stopping) -> Outcome:
    """A delivery cut short ends as the stop's kind says."""
    if outcome.reason != "cancelled" or stopping.kind in ("", StopKind.CANCEL):
        return outcome
    if stopping.kind == StopKind.SHUTDOWN:
        return Outcome(T.INTERRUPTED, reason="worker_shutdown", message=f"stopped: {stopping.reason}")
    return Outcome(
        T.FAILED,
        reason="timeout" if stopping.kind == StopKind.DEADLINE else "internal_error",
        message=f"stopped: {stopping.reason}",
    )


def as_superseded(outcome: Outcome, why: str) -> Outcome:
    """A run hung up because a newer coordination superseded it ends `cancelled` with
    reason `superseded`; one that ended on its own before the hang-up keeps its outcome."""
    if outcome.reason != "cancelled":
        return outcome
    return Outcome(T.CANCELLED, reason="superseded", message=why, data={"superseded": why})
