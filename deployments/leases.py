"""Leases, the reaper and requeueing: how a coordination survives the death of the worker
running it.

Every coordinator task holds a RunLease renewed by its heartbeat. Targets it claims point
at its lease. When a lease expires (worker killed, machine gone) the reaper:
1. marks that lease's started targets `interrupted` (their outcome is unknown; they are
   not started again), keeping the output already recorded; detached SSH runs go on on
   their machines instead, and a worker re-attaches to them (deployments.runner.detached);
2. hands a coordination that lost its lead to a live worker, which runs what never
   started and closes the coordination.
Coordinations nobody picked up (a task lost with a Redis broker) are queued again.
"""

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from deployments.models import (
    COORDINATION_ACTIVE,
    COORDINATION_TERMINAL,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    Stage,
    TargetStatus as T,
)
from deployments.queueing import queue_coordination, queue_reaper
from deployments.transitions import transition

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Our lease expired and was reaped: another worker owns this coordination now."""


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> int:
    return settings.DEPLOYMENT_LEASE_SECONDS


def _expiry():
    return timezone.now() + timedelta(seconds=lease_seconds())


def lease_acquire(*, coordination: Coordination, lead: bool) -> RunLease | None:
    """Take a lease on the coordination. A lead lease is unique: None when a live lead
    holds it (an expired one is reaped first)."""
    if lead:
        for stale in RunLease.objects.filter(coordination=coordination, is_lead=True, expires_at__lt=timezone.now()):
            lease_reap(lease=stale)
    try:
        with transaction.atomic():
            return RunLease.objects.create(
                coordination=coordination, owner=worker_identity(), is_lead=lead, expires_at=_expiry()
            )
    except IntegrityError:
        return None


def lease_renew(*, lease: RunLease) -> None:
    if not RunLease.objects.filter(pk=lease.pk).update(expires_at=_expiry()):
        raise LeaseLost(f"lease {lease.pk} of {lease.owner} was reaped")


def lease_release(*, lease: RunLease) -> None:
    RunLease.objects.filter(pk=lease.pk).delete()


class Heartbeat:
    """Renews a run's lease every third of its length (at most once a second): a worker
    that stops beating loses the lease to the reaper. Raises LeaseLost from `beat` when
    that already happened."""

    def __init__(self, lease: RunLease):
        self.lease = lease
        self.last = time.monotonic()

    def beat(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= max(1.0, lease_seconds() / 3):
            self.last = now
            lease_renew(lease=self.lease)


def lease_reap(*, lease: RunLease) -> bool:
    """Close out an expired lease: its started targets become interrupted. Returns False
    when the lease was renewed or reaped meanwhile (nothing done)."""
    with transaction.atomic():
        # Deleting first is the claim: of two reapers, only one deletes the row. Its
        # targets are interrupted in the same transaction: a reaper that dies in between
        # must not leave runs that no lease holds and nothing would ever end.
        if not RunLease.objects.filter(pk=lease.pk, expires_at__lt=timezone.now()).delete()[0]:
            return False
        for target in CoordinationTarget.objects.filter(
            coordination_id=lease.coordination_id, status__in=[T.TRIGGERING, T.RUNNING], lease__isnull=True
        ).exclude(agent_offered_at__isnull=False):  # a polling agent holds those, not a lease
            if target.remote_run_id:
                continue  # a detached run goes on: a worker of the coordination re-attaches to it
            interrupt(target, why=f"the worker running it ({lease.owner}) stopped answering")
    logger.warning("reaped the expired %s of coordination %s", lease, lease.coordination_id)
    return True


def interrupt(target: CoordinationTarget, *, why: str) -> bool:
    """An environment whose script may have started but whose end we will never see."""
    started = target.status == T.RUNNING
    detail = "the script was running; its outcome is unknown" if started else "it was connecting"
    return transition(
        target,
        T.INTERRUPTED,
        stage=Stage.RUN,
        message=f"{why}: {detail}; not started again",
        fields={"reason": "interrupted", "error": f"{why}; {detail}"},
    )


def coordination_requeue(*, coordination: Coordination, why: str) -> None:
    """Queue the coordination for a live worker (after commit)."""
    Coordination.objects.filter(pk=coordination.pk).update(requeued_at=timezone.now())
    logger.warning(
        "coordination %s queued again: %s",
        coordination.coordination_id,
        why,
        extra={"coordination_id": coordination.coordination_id},
    )
    transaction.on_commit(
        lambda: queue_coordination(coordination_pk=coordination.pk, coordination_id=coordination.coordination_id)
    )


@dataclass
class ReapReport:
    leases: int = 0
    requeued: int = 0


def coordinations_reap() -> ReapReport:
    """Resolve what dead workers left behind. Safe to run anywhere, any number of times at
    once: every step is a conditional update or delete."""
    report = ReapReport()
    now = timezone.now()
    for lease in RunLease.objects.filter(expires_at__lt=now).select_related("coordination"):
        if lease_reap(lease=lease):
            report.leases += 1
    quiet_since = now - timedelta(seconds=max(lease_seconds() * 2, settings.DEPLOYMENT_REQUEUE_SECONDS))
    # A run no live lease holds in a coordination that has ended (data from an older
    # version, a crash in between): it would hold its environment forever. A detached one
    # may still run on its machine: its coordination's task is queued to stop it.
    unheld = (
        CoordinationTarget.objects.filter(
            status__in=[T.TRIGGERING, T.RUNNING], coordination__status__in=COORDINATION_TERMINAL
        )
        .filter(Q(lease__isnull=True) | Q(lease__expires_at__lt=now))
        .exclude(agent_offered_at__isnull=False)  # agent_runs_expire cancels those
    )
    for target in unheld.filter(remote_run_id=""):
        interrupt(target, why="its coordination had ended while no worker held it")
    ended = Coordination.objects.filter(pk__in=unheld.exclude(remote_run_id="").values("coordination_id"))
    for coordination in ended.exclude(requeued_at__gt=quiet_since).exclude(leases__is_lead=True):
        coordination_requeue(coordination=coordination, why="it ended while detached runs of it had no worker")
        report.requeued += 1
    # Awaiting approval, a coordination has no lead by design: approving it queues one.
    # Pausing longer than a task may run, it has none until the pause is over.
    orphans = (
        Coordination.objects.filter(status__in=COORDINATION_ACTIVE)
        .exclude(status=C.AWAITING_APPROVAL)
        .exclude(next_wave_at__gt=now)
        .exclude(leases__is_lead=True)
        .exclude(requeued_at__gt=quiet_since)
    )
    for coordination in orphans:
        if coordination.status == C.PENDING and coordination.created_at > quiet_since:
            continue  # just created; its task is on its way
        coordination_requeue(coordination=coordination, why="no live worker holds it")
        report.requeued += 1
    return report


def reap_on_worker_start(**kwargs) -> None:
    """django-q2 `post_spawn`: a worker that starts adopts what dead ones left at once,
    instead of waiting for the next scheduled reap."""
    try:
        queue_reaper()
    except Exception:  # a broker hiccup at start-up must not kill the worker
        logger.exception("could not queue the reaper at worker start")
    finally:
        close_old_connections()
