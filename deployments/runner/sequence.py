"""One coordinator task, from start to end: the lead runs the stages, a shard only
delivers. Entry points `run_coordination` and `run_coordination_shard` (deployments.tasks)."""

import logging
import signal
import time

from django.conf import settings
from django.utils import timezone

from deployments.agent_runs import agent_runs_expire, held_by_agent
from deployments.ec2.config import ec2_mode
from deployments.ec2.stage import stage_summary
from deployments.leases import (
    Heartbeat,
    LeaseLost,
    coordination_requeue,
    interrupt,
    lease_acquire,
    lease_reap,
    lease_release,
)
from deployments.models import (
    COORDINATION_TERMINAL,
    TARGET_TERMINAL,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    Stage,
    TargetStatus as T,
)
from deployments.queueing import queue_shard
from deployments.runner.budget import FAILURE_BUDGET
from deployments.runner.detached import detached_unheld
from deployments.runner.ec2_step import EC2Step
from deployments.runner.schedule import CANCELLING_STOPS, Delivery, tasks_per_coordination
from deployments.runner.stopping import StopKind, Stopping
from deployments.runner.waves import HAND_BACK, OPENED, PARKED, SLEEPING, STOPPED, Waves
from deployments.transitions import cancel_not_started, note, transition
from environments.config import DeploymentDefaults
from environments.connectors import DeploymentContext
from powerautomation.structured_logging import log_context

logger = logging.getLogger(__name__)

SUPERSEDED = "superseded"
# Every target left waits for other coordinations: the task lets go of its worker.
WAITING = "waiting"

WAIT_FOR_SHARDS_SECONDS = 1.0


def _context(coordination: Coordination, defaults: DeploymentDefaults) -> DeploymentContext:
    return DeploymentContext(
        coordination_id=coordination.coordination_id,
        ec2_instance_id=coordination.ec2_instance_id,
        ec2_public_ip=coordination.ec2_public_ip,
        deployment_version=coordination.version,
        connect_timeout=defaults.connect_timeout,
        known_hosts_path=settings.SSH_KNOWN_HOSTS,
        ca_bundle=settings.HTTP_CA_BUNDLE,
        request_timeout=settings.HTTP_TRIGGER_TIMEOUT,
        run_retention_days=settings.HISTORY_RETENTION_DAYS or 30,
    )


class CoordinationRun:
    """The lead task of a coordination."""

    def __init__(self, coordination: Coordination, stopping: Stopping):
        self.coordination = coordination
        self.stopping = stopping
        self.defaults = DeploymentDefaults.from_json(coordination.settings)
        self.context = _context(coordination, self.defaults)
        self._heartbeat: Heartbeat | None = None

    @property
    def heartbeat(self) -> Heartbeat:
        assert self._heartbeat is not None, "the lead lease is held from run() on"
        return self._heartbeat

    def run(self) -> None:
        """1. Take the lead lease (a second task for the same coordination finds it held).
        2. EC2 stage: record what the deploy script passed, or wait for or launch the
           instance through the EC2 API. A failure there fails the coordination and no
           environment is triggered.
        3. Queue shard tasks, then deliver to pending targets, `parallel_limit` at a time
           across all tasks; wait for the shards' targets to end too.
        4. Complete or fail the coordination with each environment's reason.
        A resumed run (the previous lead died) interrupts targets no live lease holds and
        runs those that never started. A shutdown hands the rest to another worker."""
        coordination = self.coordination
        if coordination.status in COORDINATION_TERMINAL and not self._orphaned_detached_runs():
            return
        lease = lease_acquire(coordination=coordination, lead=True)
        if lease is None:
            return  # a live lead has it
        self._heartbeat = Heartbeat(lease)
        try:
            if coordination.status in COORDINATION_TERMINAL:
                self._stop_orphaned_detached_runs()
            else:
                self._steps()
        finally:
            if self._heartbeat is not None:
                lease_release(lease=self._heartbeat.lease)

    def _steps(self) -> None:
        coordination = self.coordination
        coordination.refresh_from_db()
        if coordination.status in COORDINATION_TERMINAL:
            return
        if coordination.status == C.PENDING:
            self._start_ec2_stage()
        else:
            self._interrupt_unheld_targets()
        if coordination.status == C.EC2_DEPLOYING:
            step, self.context = EC2Step(coordination, stopping=self.stopping, heartbeat=self.heartbeat).run(
                self.context
            )
            if step == "hand_back":
                self._hand_back("the worker running it shut down during the EC2 stage")
            if step != "go":
                return
        if coordination.status == C.EC2_COMPLETED:
            self._start_triggering()
        step = self._rollout()
        if step in (PARKED, SLEEPING, WAITING):
            return  # approving it, the pause's end, the machines it waits for freed: a new lead
        if step == HAND_BACK:
            self._hand_back(
                "the worker running it shut down"
                if self.stopping.shutting_down
                else "the next wave, or the pause before it, may outlast this task"
            )
            return
        finish(coordination)

    def _rollout(self) -> str:
        """Wave after wave: deliver the open one (this task and its shards), then decide
        what comes next. Returns how it ended (waves.DONE, PARKED, STOPPED, HAND_BACK)."""
        coordination = self.coordination
        waves = Waves(coordination, stopping=self.stopping, heartbeat=self.heartbeat)
        while True:
            coordination.refresh_from_db(fields=["status", "wave", "next_wave_at", "approved_at"])
            if coordination.status in COORDINATION_TERMINAL or coordination.status == C.AWAITING_APPROVAL:
                return STOPPED if coordination.status in COORDINATION_TERMINAL else PARKED
            if not waves.wave_open():
                step = waves.advance()
                if step != OPENED:
                    if step == STOPPED and self.stopping.kind in CANCELLING_STOPS:
                        cancel_not_started(coordination.targets.filter(status=T.PENDING), reason=self.stopping.reason)
                    return step
            self._queue_shards()
            delivery = Delivery(
                coordination,
                wave=coordination.wave,
                lead=True,
                defaults=self.defaults,
                context=self.context,
                stopping=self.stopping,
                heartbeat=self.heartbeat,
            )
            delivery.run()
            if delivery.left_waiting and not self.stopping.kind and not self.stopping.shutting_down:
                if not coordination.targets.filter(status__in=[T.TRIGGERING, T.RUNNING]).exists():
                    # The reaper hands it to a worker again after its quiet period, unless a
                    # target ending on a machine it waits for does so first.
                    Coordination.objects.filter(pk=coordination.pk).update(requeued_at=timezone.now())
                    return WAITING
                continue  # shards still run some: look again
            if not self.stopping.shutting_down:
                self._wait_for_shards()
            if self.stopping.shutting_down:
                return HAND_BACK
            if self.stopping.kind in CANCELLING_STOPS:
                # A cancel cancelled every target not started; a deadline or an error, only
                # the open wave's: the later waves end with them.
                cancel_not_started(coordination.targets.filter(status=T.PENDING), reason=self.stopping.reason)
                return STOPPED

    def _start_ec2_stage(self) -> None:
        coordination = self.coordination
        transition(
            coordination,
            C.EC2_DEPLOYING,
            stage=Stage.EC2,
            message=stage_summary(coordination),
            data={"mode": ec2_mode(coordination.ec2_deployment_config)},
        )

    def _start_triggering(self) -> None:
        count = self.coordination.targets.count()
        transition(
            self.coordination,
            C.LOCAL_TRIGGERING,
            stage=Stage.TRIGGER,
            message=f"triggering {count} environments",
            data={"targets": count, "parallel_limit": self.defaults.parallel_limit},
        )

    def _queue_shards(self) -> None:
        coordination = self.coordination
        pending = coordination.targets.filter(status=T.PENDING, wave__lte=coordination.wave).count()
        for _ in range(min(tasks_per_coordination() - 1, max(0, pending - 1))):
            queue_shard(coordination_pk=coordination.pk, coordination_id=coordination.coordination_id)

    def _interrupt_unheld_targets(self) -> None:
        """Targets started by a task whose lease is gone have an unknown outcome (runs that
        polling agents hold go on: their agents report them; detached SSH runs go on too,
        and this run re-attaches to them)."""
        running = self.coordination.targets.filter(status__in=[T.TRIGGERING, T.RUNNING]).exclude(held_by_agent())
        for target in running.select_related("lease"):
            if target.lease is not None and target.lease.expires_at >= timezone.now():
                continue
            if target.remote_run_id:
                CoordinationTarget.objects.filter(pk=target.pk, lease=target.lease).update(lease=None)
            else:
                interrupt(target, why="the worker running it stopped")

    def _orphaned_detached_runs(self) -> bool:
        return self.coordination.targets.filter(detached_unheld()).exists()

    def _stop_orphaned_detached_runs(self) -> None:
        """The coordination ended (cancelled) while no worker followed some of its detached
        runs: re-attach to stop them, so nothing of it goes on running."""
        self.stopping.request(StopKind.CANCEL, f"the coordination ended ({self.coordination.status})")
        Delivery(
            self.coordination,
            wave=max(self.coordination.wave, 1),
            lead=True,
            defaults=self.defaults,
            context=self.context,
            stopping=self.stopping,
            heartbeat=self.heartbeat,
        ).run()

    def _wait_for_shards(self) -> None:
        """Other tasks may still be delivering; the lead closes the coordination only when
        every target has ended, reaping shards that die meanwhile."""
        coordination = self.coordination
        while coordination.targets.filter(wave__lte=coordination.wave).exclude(status__in=TARGET_TERMINAL).exists():
            for lease in RunLease.objects.filter(
                coordination=coordination, is_lead=False, expires_at__lt=timezone.now()
            ):
                lease_reap(lease=lease)
            agent_runs_expire(targets=coordination.targets.all())
            self.heartbeat.beat(force=True)
            self.stopping.check()
            if self.stopping.shutting_down:
                return  # nothing of ours runs; another worker takes over the waiting
            if self._orphaned_detached_runs():
                # A shard that stopped left detached runs: deliver again to adopt them (after
                # a stop, the reaper hands them to a task that stops them).
                return
            if self.stopping.kind:
                cancel_not_started(coordination.targets.filter(status=T.PENDING), reason=self.stopping.reason)
            time.sleep(WAIT_FOR_SHARDS_SECONDS)

    def _hand_back(self, why: str) -> None:
        """Shutting down, or the rest will not fit in this task: release the lead and queue
        the coordination for another worker (which runs what never started and closes it)."""
        lease_release(lease=self.heartbeat.lease)
        self._heartbeat = None
        if self.coordination.targets.exclude(status__in=TARGET_TERMINAL).exists():
            note(self.coordination, f"🔁 handed to a fresh worker task: {why}", stage=Stage.COORDINATION)
            coordination_requeue(coordination=self.coordination, why=why)
        else:
            finish(self.coordination)


def run_shard(coordination: Coordination, stopping: Stopping) -> None:
    """Deliver to pending targets of a coordination whose lead is at work, then leave."""
    coordination.refresh_from_db(fields=["status", "wave"])
    if coordination.status not in (C.LOCAL_TRIGGERING, C.LOCAL_DEPLOYING) or coordination.wave == 0:
        return
    lease = lease_acquire(coordination=coordination, lead=False)
    if lease is None:  # only a lead lease is unique; kept for the type
        return
    try:
        defaults = DeploymentDefaults.from_json(coordination.settings)
        Delivery(
            coordination,
            wave=coordination.wave,
            lead=False,
            defaults=defaults,
            context=_context(coordination, defaults),
            stopping=stopping,
            heartbeat=Heartbeat(lease),
        ).run()
    finally:
        lease_release(lease=lease)


def finish(coordination: Coordination) -> None:
    """Every target has ended: local_completed, then completed when all succeeded, else
    failed with each environment's reason. A cancel may land at any point in between:
    a move that finds the status changed stops here (the coordination is cancelled)."""
    coordination.refresh_from_db(fields=["status"])
    if coordination.status in COORDINATION_TERMINAL:
        return  # cancelled while running
    targets = list(coordination.targets.order_by("environment_id"))
    failed = [target for target in targets if target.status != T.SUCCEEDED]
    if coordination.status in (C.LOCAL_TRIGGERING, C.LOCAL_DEPLOYING):
        healthy = len(targets) - len(failed)
        if not transition(
            coordination,
            C.LOCAL_COMPLETED,
            stage=Stage.VERIFY,
            message=f"all environments finished: {healthy} succeeded, {len(failed)} did not",
            data={"succeeded": healthy, "failed": len(failed), "total": len(targets)},
        ):
            return _moved_on(coordination)
    if not failed:
        if not transition(coordination, C.COMPLETED, message=f"all {len(targets)} environments succeeded"):
            _moved_on(coordination)
        return
    superseded = {target.error for target in failed if target.reason == SUPERSEDED}
    if len(superseded) == 1 and all(target.reason == SUPERSEDED for target in failed):
        # A newer coordination took over every environment this one had left.
        (why,) = superseded
        if not transition(coordination, C.CANCELLED, message=why, fields={"error": why}):
            _moved_on(coordination)
        return
    reasons = "; ".join(f"{target.environment_id} ({target.reason or target.status})" for target in failed)
    summary = f"{len(failed)} of {len(targets)} environments failed: {reasons}"
    if any(target.reason == FAILURE_BUDGET for target in failed):
        budget = (coordination.rollout or {}).get("failure_budget")
        summary = f"the failure budget ({budget} failures allowed) is spent; {summary}"
    if not transition(
        coordination,
        C.FAILED,
        message=summary,
        data={"failed": [target.environment_id for target in failed], "total": len(targets), "reasons": reasons},
        fields={"error": summary},
    ):
        _moved_on(coordination)


def _moved_on(coordination: Coordination) -> None:
    coordination.refresh_from_db(fields=["status"])
    logger.info("coordination %s: %s before it could be closed", coordination.coordination_id, coordination.status)


def fail_unfinished(coordination: Coordination, reason: str) -> None:
    """Close out a coordination whose run broke off: nothing may stay active. Targets that
    never started fail; those whose script may have started are interrupted (unknown)."""
    for target in coordination.targets.exclude(status__in=TARGET_TERMINAL):
        unknown = target.status in (T.TRIGGERING, T.RUNNING)
        transition(
            target,
            T.INTERRUPTED if unknown else T.FAILED,
            message=reason,
            fields={"reason": "interrupted" if unknown else "internal_error", "error": reason},
        )
    coordination.refresh_from_db(fields=["status"])
    if coordination.status not in COORDINATION_TERMINAL:
        transition(coordination, C.FAILED, message=reason, fields={"error": reason})


def _run(coordination: Coordination, *, lead: bool) -> None:
    started = time.monotonic()
    role = "lead" if lead else "shard"
    logger.info("coordination %s: %s run starts", coordination.coordination_id, role)
    stopping = Stopping(coordination.pk)
    previous_handler = stopping.catch_sigterm()
    try:
        if lead:
            CoordinationRun(coordination, stopping).run()
        else:
            run_shard(coordination, stopping)
    except LeaseLost:
        # Another worker took over (we were presumed dead): write nothing more.
        logger.warning("coordination %s: lease lost; leaving it to its new owner", coordination.coordination_id)
    except Exception as exc:
        logger.exception("coordination %s: run broke off", coordination.coordination_id)
        fail_unfinished(coordination, f"the coordinator stopped on an error: {type(exc).__name__}: {exc}")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    logger.info(
        "coordination %s: %s run ends after %.2f s", coordination.coordination_id, role, time.monotonic() - started
    )
    if stopping.terminated_by_signal:
        # This process was asked to terminate; now that the run is closed out, do so.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


def run_coordination(coordination: Coordination) -> None:
    with log_context(coordination_id=coordination.coordination_id):
        _run(coordination, lead=True)


def run_coordination_shard(coordination: Coordination) -> None:
    with log_context(coordination_id=coordination.coordination_id):
        _run(coordination, lead=False)
