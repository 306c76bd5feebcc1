"""Delivery to a coordination's pending targets, by the lead or a shard: claim targets as
room frees up, start a thread for each, and record what the threads report.

Threads do the waiting (SSH sessions, HTTP calls) and never touch the database; this
module's loop, in the task's main thread, is the only writer. Threads report through a
queue, applied in short batched transactions: SQLite stays free of "database is locked",
a coordination keeps one database connection whatever its fan-out, and claiming,
scheduling and cancelling happen in one place.
"""

import dataclasses
import math
import queue
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import IntegrityError, transaction

from deployments.agent_runs import agent_run_offer, agent_runs_followed
from deployments.leases import Heartbeat, lease_renew
from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    Stage,
    TargetStatus as T,
)
from deployments.runner import reports
from deployments.runner.budget import FailureBudget
from deployments.runner.callbacks import CALLBACK_METHODS, Callbacks
from deployments.runner.delivery import HANDED_OVER, TargetReporter, deliver_and_report
from deployments.runner.detached import detached_let_go, remote_run_for, run_id_for, runs_detached, targets_adopt
from deployments.runner.output import OutputBook
from deployments.runner.stopping import STOP_CHECK_SECONDS, StopKind, Stopping
from deployments.selectors import targets_waiting
from deployments.transitions import cancel_not_started, note, transition
from environments.config import DeploymentDefaults
from environments.connectors import DeploymentContext, Target
from environments.models import ConnectionMethod

BATCH_WAIT_SECONDS = 0.1
# How long a task with nothing running holds its worker while its targets wait for other
# coordinations, before it lets go (so queued coordinations never starve the workers).
WAIT_IN_TASK_SECONDS = 10.0
# Stops after which targets not claimed yet are cancelled (a shutdown leaves them for the
# worker that takes over).
CANCELLING_STOPS = (StopKind.CANCEL, StopKind.DEADLINE, StopKind.ERROR)


def tasks_per_coordination() -> int:
    return max(1, settings.DEPLOYMENT_TASKS_PER_COORDINATION)


def where(environment) -> str:
    """Where a trigger goes, for the log: the endpoint of an agent, else host:port."""
    if environment.connection_method == "http_api" and environment.api_endpoint:
        return environment.api_endpoint
    if environment.connection_method == "webhook" and environment.webhook_url:
        return environment.webhook_url
    return environment.address


class Delivery:
    """One task's share of one wave of a coordination's deliveries."""

    def __init__(
        self,
        coordination: Coordination,
        *,
        wave: int,
        lead: bool,
        defaults: DeploymentDefaults,
        context: DeploymentContext,
        stopping: Stopping,
        heartbeat: Heartbeat,
    ):
        self.coordination = coordination
        self.wave = wave
        self.lead = lead
        self.budget = FailureBudget(coordination)
        # Targets whose environment another coordination holds: claimed once it lets go.
        self.waiting: list[CoordinationTarget] = []
        self.waiting_for: dict[int, str] = {}
        # Targets another coordination superseded while they ran: pk → why.
        self.superseded: dict[int, str] = {}
        self.defaults = defaults
        self.context = context
        self.stopping = stopping
        self.heartbeat = heartbeat
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.targets: dict[int, CoordinationTarget] = {}
        self.reporters: dict[int, TargetReporter] = {}
        # Claimed and not ended: those without a reporter are runs polling agents hold.
        self.in_flight: set[int] = set()
        self.output = OutputBook()
        # Detached runs whose end this batch records: (target pk, kept), told after commit.
        self.ends_recorded: list[tuple[int, bool]] = []
        self.callbacks = Callbacks()
        # Left with targets that only wait for other coordinations (see _schedule).
        self.left_waiting = False

    def run(self) -> None:
        """Deliver to every pending target of the wave, `parallel_limit` at a time across
        the coordination's tasks, until each one this task claimed has ended."""
        targets = list(
            self.coordination.targets.filter(status=T.PENDING, wave__lte=self.wave)
            .select_related("remote_environment")
            .order_by("pk")
        )
        if not self.lead:
            targets.reverse()  # meet the lead in the middle instead of racing it for each claim
        adopted = targets_adopt(self.coordination, wave=self.wave, lease=self.heartbeat.lease)
        self.targets = {target.pk: target for target in adopted + targets}
        if not self.targets:
            return
        limit = max(1, math.ceil(self.defaults.parallel_limit / tasks_per_coordination()))
        with ThreadPoolExecutor(max_workers=min(limit, len(self.targets)), thread_name_prefix="deliver") as pool:
            try:
                for target in adopted:  # first: they are running already
                    self.in_flight.add(target.pk)
                    pool.submit(deliver_and_report, *self._delivery_arguments(target, adopted=True))
                self._schedule(pool, targets, limit)
            except BaseException:
                # Let running deliveries end at once instead of holding the pool's shutdown.
                self.stopping.request(StopKind.ERROR, "the coordinator stopped on an error")
                raise
        self.output.flush(self.targets)

    def _schedule(self, pool: ThreadPoolExecutor, pending: list[CoordinationTarget], limit: int) -> None:
        """1. Claim pending targets while there is room, unless stopping or the failure
           budget is spent; a target whose environment is busy waits.
        2. On a cancelling stop, cancel what was never claimed; on a shutdown, leave it.
        3. Apply the threads' reports (a short wait for the first one paces the loop).
        4. Every second look for a stop, retry the waiting targets, hang up the runs a
           newer coordination superseded; hand callbacks over; renew the lease."""
        stopping = self.stopping
        last_stop_check = last_progress = time.monotonic()
        while pending or self.waiting or self.in_flight:
            if pending and len(self.in_flight) < limit and not stopping.stopped and not stopping.shutting_down:
                if self.budget.spent():
                    self.budget.stop_the_rest()
                    pending, self.waiting = [], []
                room = limit - len(self.in_flight)
                batch, pending = pending[:room], pending[room:]
                for target in self._claim(batch):
                    self.in_flight.add(target.pk)
                    if not target.agent_offered_at:  # a polling agent's run needs no thread
                        pool.submit(deliver_and_report, *self._delivery_arguments(target))
            if (pending or self.waiting) and stopping.kind in CANCELLING_STOPS:
                cancel_not_started(pending + self.waiting, reason=stopping.reason)
                pending, self.waiting = [], []
            if stopping.shutting_down:
                pending, self.waiting = [], []  # left pending for the worker that takes over
                detached_let_go(self.reporters, self.targets)
            self._apply_reports()
            now = time.monotonic()
            if now - last_stop_check >= STOP_CHECK_SECONDS:
                stopping.check()
                last_stop_check = now
                pending = self._waiting_done() + pending
                self._hang_up_superseded()
                agent_runs = self.in_flight - self.reporters.keys()
                self.in_flight -= agent_runs_followed(agent_runs, let_go=stopping.stopped or stopping.shutting_down)
            self.callbacks.collect(self.reporters)
            self.heartbeat.beat()
            self._advance_to_deploying()
            if self.in_flight:
                last_progress = now
            elif now - last_progress >= WAIT_IN_TASK_SECONDS or stopping.deadline - now < WAIT_IN_TASK_SECONDS:
                # Nothing runs and what is left waits for other coordinations: free the worker
                # (they stay pending; a target ending elsewhere, or the reaper, brings a task back).
                self.left_waiting = True
                return

    def _claim(self, batch: list[CoordinationTarget]) -> list[CoordinationTarget]:
        """Conditional updates: of two tasks claiming the same target, one wins; of two
        coordinations claiming the same environment, the database lets one through."""
        claimed: list[CoordinationTarget] = []
        waiting = targets_waiting(batch)
        for target in batch:
            if target.pk in waiting:
                self._wait(target, waiting[target.pk])
        # In environment order: two batches that claim on the same environments take their
        # (PostgreSQL) index locks in one order, so they never deadlock.
        free = sorted((t for t in batch if t.pk not in waiting), key=lambda t: (t.remote_environment_id or 0, t.pk))
        if not free:
            return claimed  # no write transaction (SQLite's lock) while everything waits
        with transaction.atomic():
            # A claim holds only under a lease that still exists: a task presumed dead (its
            # lease reaped, its coordination taken over) raises LeaseLost here, claiming nothing.
            lease_renew(lease=self.heartbeat.lease)
            for target in free:
                try:
                    if self._claim_one(target):
                        claimed.append(target)
                except IntegrityError:  # another coordination claimed the environment first
                    target.status = T.PENDING
                    self._wait(target, "another coordination")
        return claimed

    def _claim_one(self, target: CoordinationTarget) -> bool:
        claimed = claim_one(target, coordination=self.coordination, lease=self.heartbeat.lease, defaults=self.defaults)
        environment = target.remote_environment
        if claimed and environment is not None and environment.connection_method in CALLBACK_METHODS:
            self.callbacks.issue(target, timeout=environment.timeout)
        return claimed

    def _wait(self, target: CoordinationTarget, holder: str) -> None:
        """The target waits for the coordination holding its environment (`queue`); its
        record says which, and one event says so each time that changes."""
        self.waiting.append(target)
        if self.waiting_for.get(target.pk) == holder:
            return
        self.waiting_for[target.pk] = holder
        if CoordinationTarget.objects.filter(pk=target.pk, status=T.PENDING).update(waiting_for=holder):
            target.waiting_for = holder
            note(
                self.coordination,
                f"waiting for {holder}, which holds this environment",
                stage=Stage.TRIGGER,
                target=target,
                data={"waiting_for": holder},
            )

    def _waiting_done(self) -> list[CoordinationTarget]:
        """The waiting targets, to be claimed again (those still busy come back)."""
        waiting, self.waiting = self.waiting, []
        return waiting

    def _hang_up_superseded(self) -> None:
        if not self.in_flight:
            return
        requests = (
            CoordinationTarget.objects.filter(pk__in=self.in_flight)
            .exclude(stop_requested="")
            .values_list("pk", "stop_requested")
        )
        for target_pk, why in requests:
            reporter = self.reporters.get(target_pk)
            if reporter is not None and target_pk not in self.superseded:
                self.superseded[target_pk] = why
                reporter.stop.set()

    def _delivery_arguments(self, target: CoordinationTarget, *, adopted: bool = False) -> tuple:
        reporter = TargetReporter(target.pk, self.inbox, self.stopping.target_event())
        reporter.started = target.status == T.RUNNING
        self.reporters[target.pk] = reporter
        spec, context = delivery_context(target, self.context, self.defaults, adopted=adopted)
        context = dataclasses.replace(context, callback_url=self.callbacks.url_for(target.pk))
        return (spec, context, self.defaults, reporter)

    def _advance_to_deploying(self) -> None:
        if self.lead and self.coordination.status == C.LOCAL_TRIGGERING:
            advance_to_deploying(self.coordination, wave=self.wave)

    def _apply_reports(self) -> None:
        try:
            batch = [self.inbox.get(timeout=BATCH_WAIT_SECONDS)]
        except queue.Empty:
            return
        while True:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        self.ends_recorded.clear()
        with transaction.atomic():
            for kind, target_pk, payload in batch:
                self._apply(kind, self.targets[target_pk], payload)
            # Output is written in the same batch it arrived in: a crash loses none of it.
            self.output.flush(self.targets)
        for target_pk, kept in self.ends_recorded:  # committed: their run directories may go
            if (reporter := self.reporters.get(target_pk)) is not None:
                reporter.end_committed(kept)

    def _apply(self, kind: str, target: CoordinationTarget, payload) -> None:
        if kind == "output":
            self.output.add(target.pk, *payload)
        elif kind == "ended":
            self.ends_recorded.append((target.pk, reports.record_end(target, payload, self.output)))
        elif kind == "started":
            reports.record_started(target, payload)
        elif kind == "retrying":
            reports.record_retry(self.coordination, target, *payload)
        elif kind == "health":
            reports.record_health(self.coordination, target, *payload)
        elif kind == "awaiting_callback":
            self.callbacks.awaiting.add(target.pk)
        elif kind == "finished":
            if target.pk in self.superseded:
                payload = reports.as_superseded(payload, self.superseded[target.pk])
            if payload.reason == HANDED_OVER:
                reports.record_handed_over(target, payload, output=self.output, lease=self.heartbeat.lease)
            else:
                reports.record_outcome(target, payload, stopping=self.stopping, output=self.output)
            self.in_flight.discard(target.pk)
            self.callbacks.awaiting.discard(target.pk)
            self.reporters.pop(target.pk, None)


def delivery_context(
    target: CoordinationTarget, context: DeploymentContext, defaults: DeploymentDefaults, *, adopted: bool
) -> tuple[Target, DeploymentContext]:
    """What one delivery thread gets: the target as its environment and the coordination's
    settings describe it, and the context with its deadline (the environment's timeout
    counted from the claim, also for a run re-attached to) and its detached run."""
    environment = target.remote_environment
    assert environment is not None, "claimed targets have an environment"
    spec = Target.of(environment, detach=defaults.detach_for(environment.detach), run_directory=defaults.run_directory)
    claimed_at = target.started_at.timestamp() if target.started_at else time.time()
    return spec, dataclasses.replace(
        context, deadline=claimed_at + spec.timeout, remote_run=remote_run_for(target, adopted=adopted)
    )


def advance_to_deploying(coordination: Coordination, *, wave: int) -> None:
    """local_triggering → local_deploying once every target of the first wave started
    (or ended): the rollout is under way."""
    if coordination.targets.filter(status__in=[T.PENDING, T.TRIGGERING], wave__lte=wave).exists():
        return
    if not transition(coordination, C.LOCAL_DEPLOYING, stage=Stage.RUN, message="every environment has started"):
        coordination.refresh_from_db(fields=["status"])  # cancelled meanwhile


def claim_one(
    target: CoordinationTarget, *, coordination: Coordination, lease: RunLease, defaults: DeploymentDefaults
) -> bool:
    """pending → triggering under `lease` (a polling agent's run is offered instead); a
    detached SSH run gets its run id here, before anything reaches the machine."""
    environment = target.remote_environment
    if environment is None:
        transition(
            target,
            T.FAILED,
            stage=Stage.TRIGGER,
            message="the environment was deleted before it was triggered",
            fields={"reason": "environment_deleted", "error": "environment deleted"},
        )
        return False
    if environment.connection_method == ConnectionMethod.POLLING:
        return agent_run_offer(target, environment)  # its transition is a savepoint
    run_id = run_id_for(coordination, target) if runs_detached(environment, defaults) else ""
    with transaction.atomic():  # a savepoint: a refused claim leaves the batch usable
        return transition(
            target,
            T.TRIGGERING,
            stage=Stage.TRIGGER,
            message=f"connecting over {environment.connection_method} to {where(environment)}",
            data={"attempt": 1, "worker": lease.owner, "wave": target.wave, **({"run_id": run_id} if run_id else {})},
            fields={"attempts": 1, "lease": lease, "waiting_for": "", "remote_run_id": run_id},
        )
