"""django-q2 tasks: take ids, load rows, call one service. Each is safe to run twice."""

import logging
from datetime import timedelta

from deployments.agent_runs import agent_runs_expire
from deployments.leases import coordinations_reap
from deployments.models import Coordination
from deployments.notifications import coordination_notify
from deployments.retention import history_prune
from deployments.runner.sequence import run_coordination as run_lead, run_coordination_shard as run_shard

logger = logging.getLogger(__name__)


def run_coordination(coordination_pk: int) -> None:
    """Run a coordination to its end in this process. Safe to run twice: a finished
    coordination is left alone, one with a live lead too."""
    coordination = Coordination.objects.filter(pk=coordination_pk).first()
    if coordination is not None:
        run_lead(coordination)


def run_coordination_shard(coordination_pk: int) -> None:
    coordination = Coordination.objects.filter(pk=coordination_pk).first()
    if coordination is not None:
        run_shard(coordination)


def reap_coordinations() -> str:
    # Runs polling agents hold end on time even while no lead waits for them.
    agent_runs = agent_runs_expire()
    report = coordinations_reap()
    return (
        f"{report.leases} expired leases reaped, {report.requeued} coordinations queued again, "
        f"{agent_runs} overdue polling runs ended"
    )


def notify_coordination_end(coordination_pk: int, kind: str = "ended") -> str:
    """`kind`: "ended" (tasks queued before it existed have none), or "awaiting_approval"."""
    return coordination_notify(coordination_pk=coordination_pk, kind=kind)


def prune_history(days: int) -> str:
    """The daily prune (HISTORY_RETENTION_DAYS, written into the schedule by `migrate`)."""
    report = history_prune(older_than=timedelta(days=days))
    logger.info("history retention: %s", report.summary())
    return report.summary()
