"""django-q2 tasks: take ids, load rows, call one service. Each is safe to run twice."""

from deployments.leases import coordinations_reap
from deployments.notifications import coordination_notify
from deployments.services import coordination_run, coordination_run_shard


def run_coordination(coordination_pk: int) -> None:
    coordination_run(coordination_pk=coordination_pk)


def run_coordination_shard(coordination_pk: int) -> None:
    coordination_run_shard(coordination_pk=coordination_pk)


def reap_coordinations() -> str:
    report = coordinations_reap()
    return f"{report.leases} expired leases reaped, {report.requeued} coordinations queued again"


def notify_coordination_end(coordination_pk: int) -> str:
    return coordination_notify(coordination_pk=coordination_pk)
