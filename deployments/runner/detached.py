"""Detached SSH runs on the coordinator's side: which targets run detached, how a worker
lets one go when it shuts down, and how the next worker re-attaches to it.

A detached target carries its run's id (`remote_run_id`, set when it is claimed) and the
offset of its output recorded so far (`remote_offset`). While a worker follows it, the
target points at that worker's lease. A worker that shuts down, or whose lease the reaper
removes (it died), leaves it `triggering`/`running` with no lease: any task of the
coordination then adopts it with a conditional update (one wins) and follows it from the
recorded offset (environments/connectors/ssh_detached.py).
"""

import secrets

from django.db.models import Q, QuerySet

from deployments.models import Coordination, CoordinationTarget, RunLease, Stage, TargetStatus as T
from deployments.transitions import note
from environments.config import DeploymentDefaults
from environments.connectors.base import RemoteRun
from environments.models import ConnectionMethod, RemoteEnvironment


def runs_detached(environment: RemoteEnvironment, defaults: DeploymentDefaults) -> bool:
    """SSH environments run detached unless their own `detach`, or ssh_settings, says not."""
    return environment.connection_method == ConnectionMethod.SSH and defaults.detach_for(environment.detach)


def run_id_for(coordination: Coordination, target: CoordinationTarget) -> str:
    """Made once, when the target is claimed, and stored: stable across workers and
    attempts, one run directory per target. The random part keeps it unique on the machine
    across databases and time: a coordination id given again (`--coordination-id`, another
    platform deploying to the same machine, a test database) must never find an old run's
    directory and take its end for its own. At most 100 + 1 + 10 + 1 + 8 characters."""
    return f"{coordination.coordination_id}.{target.pk}.{secrets.token_hex(4)}"


def detached_unheld() -> Q:
    """Detached runs that no worker follows: to be adopted."""
    return Q(status__in=[T.TRIGGERING, T.RUNNING], lease__isnull=True) & ~Q(remote_run_id="")


def remote_run_for(target: CoordinationTarget, *, adopted: bool) -> RemoteRun | None:
    if not target.remote_run_id:
        return None
    return RemoteRun(
        run_id=target.remote_run_id,
        offset=target.remote_offset,
        started=target.status == T.RUNNING,
        adopted=adopted,
    )


def targets_adopt(coordination: Coordination, *, wave: int, lease: RunLease) -> list[CoordinationTarget]:
    """Claim the coordination's detached runs that no worker follows (conditional updates:
    of two tasks, one gets each), each noted in its record."""
    adopted = []
    candidates: QuerySet[CoordinationTarget] = (
        coordination.targets.filter(detached_unheld(), wave__lte=wave)
        .select_related("remote_environment")
        .order_by("pk")
    )
    for target in candidates:
        if not CoordinationTarget.objects.filter(detached_unheld(), pk=target.pk, status=target.status).update(
            lease=lease
        ):
            continue
        target.lease = lease
        where = "was running" if target.status == T.RUNNING else "may have started"
        note(
            coordination,
            f"re-attaching to the detached run {target.remote_run_id} (it {where}; "
            f"{target.remote_offset} bytes of its output were recorded): worker {lease.owner}",
            stage=Stage.RUN,
            target=target,
            data={"run_id": target.remote_run_id, "offset": target.remote_offset, "worker": lease.owner},
        )
        adopted.append(target)
    return adopted


def target_let_go(target: CoordinationTarget, *, lease: RunLease, why: str, fields: dict | None = None) -> None:
    """This worker stops following the run (it keeps running on the machine)."""
    CoordinationTarget.objects.filter(pk=target.pk, lease=lease).update(lease=None, **(fields or {}))
    target.lease = None
    note(
        target.coordination,
        f"🔁 {why}: the script keeps running on the machine; the next worker re-attaches to it",
        stage=Stage.RUN,
        target=target,
        data={"run_id": target.remote_run_id, "offset": target.remote_offset},
    )


def detached_let_go(reporters: dict, targets: dict[int, CoordinationTarget]) -> None:
    """The worker shuts down: its detached runs are let go at once (they keep running on
    their machines), not stopped after the grace period like attached sessions."""
    for target_pk, reporter in reporters.items():
        if targets[target_pk].remote_run_id and not reporter.hand_over.is_set():
            reporter.hand_over.set()
            reporter.stop.set()
