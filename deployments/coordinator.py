"""Runs one coordination through its stages, inside a django-q2 worker.

Threads do the waiting (SSH sessions, HTTP calls); this module's main thread is the only
one that touches the database. Threads report through a queue, and the main thread
applies their reports in short batched transactions. That keeps SQLite free of "database
is locked", keeps one database connection per coordination whatever its fan-out, and lets
the main thread claim, schedule and cancel in one place.
"""

import dataclasses
import hashlib
import logging
import math
import os
import queue
import secrets
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployments.delivery import Outcome, TargetReporter, deliver_and_report, target_spec
from deployments.ec2 import EC2Stage, EC2StageError, StageStopped, ec2_mode, stage_summary
from deployments.leases import LeaseLost, interrupt, lease_acquire, lease_reap, lease_release, lease_renew
from deployments.models import (
    COORDINATION_TERMINAL,
    TARGET_TERMINAL,
    CallbackToken,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    Stage,
    TargetStatus as T,
)
from deployments.transitions import note, transition
from environments.config import DeploymentDefaults
from environments.connectors import DeploymentContext
from environments.services import environment_record_health

logger = logging.getLogger(__name__)

BATCH_WAIT_SECONDS = 0.1
CANCEL_CHECK_SECONDS = 1.0
CLUSTER_CHECK_SECONDS = 2.0
CALLBACK_POLL_SECONDS = 0.5
WAIT_FOR_SHARDS_SECONDS = 1.0
# The coordinator ends its own run this long before django-q2 would kill the task.
DEADLINE_MARGIN_SECONDS = 60
# Methods whose agent reports the run's end by calling back.
CALLBACK_METHODS = frozenset({"http_api", "webhook"})


class StopKind:
    """Why a run stopped early; decides how the targets it was running end."""

    CANCEL = "cancel"  # the operator cancelled: cancelled
    SHUTDOWN = "shutdown"  # the worker is shutting down: interrupted, the rest requeued
    DEADLINE = "deadline"  # the task ran out of time: failed (timeout)
    ERROR = "error"


class CoordinationRun:
    """The main thread of one coordinator task: the lead (stages, then delivery) or a
    shard (delivery only) of a coordination."""

    def __init__(self, coordination: Coordination, *, lead: bool = True):
        self.coordination = coordination
        self.lead = lead
        self.defaults = DeploymentDefaults.from_json(coordination.settings)
        self.context = DeploymentContext(
            coordination_id=coordination.coordination_id,
            ec2_instance_id=coordination.ec2_instance_id,
            ec2_public_ip=coordination.ec2_public_ip,
            deployment_version=coordination.version,
            connect_timeout=self.defaults.connect_timeout,
            known_hosts_path=settings.SSH_KNOWN_HOSTS,
            ca_bundle=settings.HTTP_CA_BUNDLE,
            request_timeout=settings.HTTP_TRIGGER_TIMEOUT,
        )
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.stop_kind = ""
        self.stop_reason = ""
        self.lease: RunLease | None = None
        self.targets: dict[int, CoordinationTarget] = {}
        self.output: dict[int, list[str]] = {}
        self.reporters: dict[int, TargetReporter] = {}
        self.awaiting_callback: set[int] = set()
        self.callback_urls: dict[int, str] = {}
        self.deadline = time.monotonic() + settings.Q_TIMEOUT - DEADLINE_MARGIN_SECONDS
        self.shutdown_requested_at: float | None = None
        self.terminated_by_signal = False
        self.last_heartbeat = time.monotonic()

    # --- the lead: stages ------------------------------------------------------------------

    def run(self) -> None:
        """1. Take the lead lease (a second task for the same coordination finds it held).
        2. EC2 stage (deployments.ec2): record what the deploy script passed, or wait for
           or launch the instance through the EC2 API. A failure there fails the
           coordination and no environment is triggered.
        3. Queue shard tasks, then deliver to pending targets, `parallel_limit` at a time
           across all tasks; wait for the shards' targets to end too.
        4. Complete or fail the coordination with each environment's reason.
        A resumed run (the previous lead died) interrupts targets no live lease holds and
        runs those that never started."""
        coordination = self.coordination
        if coordination.status in COORDINATION_TERMINAL:
            return
        self.lease = lease_acquire(coordination=coordination, lead=True)
        if self.lease is None:
            return  # a live lead has it
        try:
            coordination.refresh_from_db()
            if coordination.status in COORDINATION_TERMINAL:
                return
            if coordination.status == C.PENDING:
                transition(
                    coordination,
                    C.EC2_DEPLOYING,
                    stage=Stage.EC2,
                    message=stage_summary(coordination),
                    data={"mode": ec2_mode(coordination.ec2_deployment_config)},
                )
            else:
                self._interrupt_unheld_targets()
            if coordination.status == C.EC2_DEPLOYING and not self._ec2_stage():
                return
            if coordination.status == C.EC2_COMPLETED:
                count = coordination.targets.count()
                transition(
                    coordination,
                    C.LOCAL_TRIGGERING,
                    stage=Stage.TRIGGER,
                    message=f"triggering {count} environments",
                    data={"targets": count, "parallel_limit": self.defaults.parallel_limit},
                )
            self._queue_shards()
            self._deliver()
            if not self.shutdown_requested_at:
                self._wait_for_shards()
            if self.shutdown_requested_at:
                self._hand_back("the worker running it shut down")
                return
            self._finish()
        finally:
            if self.lease is not None:
                lease_release(lease=self.lease)

    def run_shard(self) -> None:
        """Deliver to pending targets of a coordination whose lead is at work, then leave."""
        if self.coordination.status not in (C.LOCAL_TRIGGERING, C.LOCAL_DEPLOYING):
            return
        self.lease = lease_acquire(coordination=self.coordination, lead=False)
        try:
            self._deliver()
        finally:
            lease_release(lease=self.lease)

    def _ec2_stage(self) -> bool:
        """Run the EC2 stage and complete it. False: the run ends here, because the stage
        failed (the coordination fails, its environments are never triggered), the
        coordination was cancelled, or the worker is shutting down (handed back)."""
        coordination = self.coordination
        stage = EC2Stage(coordination, pause=self._ec2_pause)
        try:
            stage.run()
        except EC2StageError as exc:
            self._fail_ec2_stage(exc)
            return False
        except StageStopped:
            if self.stop_kind == StopKind.CANCEL:
                return False  # coordination_cancel already cancelled the environments
            if self.shutdown_requested_at and self.stop_kind in ("", StopKind.SHUTDOWN):
                self._hand_back("the worker running it shut down during the EC2 stage")
                return False
            code = "CoordinationTimeout" if self.stop_kind == StopKind.DEADLINE else "Stopped"
            self._fail_ec2_stage(EC2StageError(code, self.stop_reason))
            return False
        self.context = dataclasses.replace(
            self.context, ec2_instance_id=coordination.ec2_instance_id, ec2_public_ip=coordination.ec2_public_ip
        )
        transition(
            coordination,
            C.EC2_COMPLETED,
            stage=Stage.EC2,
            message=stage.completed_message(),
            data={
                "mode": ec2_mode(coordination.ec2_deployment_config),
                "instance_id": coordination.ec2_instance_id,
                "public_ip": coordination.ec2_public_ip,
            },
        )
        return True

    def _ec2_pause(self, seconds: float) -> bool:
        """The EC2 stage waits here: the lease stays alive, cancel and shutdown are
        noticed within a second. False: stop waiting."""
        end = time.monotonic() + seconds
        while True:
            self._heartbeat()
            self._check_stop()
            if self.stop.is_set() or self.shutdown_requested_at:
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(remaining, CANCEL_CHECK_SECONDS))

    def _fail_ec2_stage(self, error: EC2StageError) -> None:
        reason = f"EC2 stage failed: {error.code}: {error.message}"
        coordination = self.coordination
        with transaction.atomic():
            for target in coordination.targets.filter(status=T.PENDING):
                transition(
                    target,
                    T.CANCELLED,
                    stage=Stage.TRIGGER,
                    message="not started: the EC2 stage failed",
                    data={"reason": "ec2_failed"},
                    fields={"reason": "ec2_failed", "error": reason},
                )
            transition(
                coordination,
                C.FAILED,
                stage=Stage.EC2,
                message=reason,
                data={"error_code": error.code, "error_message": error.message},
                fields={"error": reason},
            )

    def _tasks(self) -> int:
        return max(1, settings.DEPLOYMENT_TASKS_PER_COORDINATION)

    def _queue_shards(self) -> None:
        from deployments.services import enqueue_shard

        pending = self.coordination.targets.filter(status=T.PENDING).count()
        for _ in range(min(self._tasks() - 1, max(0, pending - 1))):
            enqueue_shard(self.coordination)

    def _interrupt_unheld_targets(self) -> None:
        """Targets started by a task whose lease is gone have an unknown outcome."""
        for target in self.coordination.targets.filter(status__in=[T.TRIGGERING, T.RUNNING]).select_related("lease"):
            if target.lease is None or target.lease.expires_at < timezone.now():
                interrupt(target, why="the worker running it stopped")

    def _wait_for_shards(self) -> None:
        """Other tasks may still be delivering; the lead closes the coordination only when
        every target has ended, reaping shards that die meanwhile."""
        while True:
            if not self.coordination.targets.exclude(status__in=TARGET_TERMINAL).exists():
                return
            for lease in RunLease.objects.filter(
                coordination=self.coordination, is_lead=False, expires_at__lt=timezone.now()
            ):
                lease_reap(lease=lease)
            self._heartbeat(force=True)
            self._check_stop()
            if self.shutdown_requested_at:
                return  # nothing of ours runs; another worker takes over the waiting
            if self.stop_kind:
                self._cancel_pending(list(self.coordination.targets.filter(status=T.PENDING)))
            time.sleep(WAIT_FOR_SHARDS_SECONDS)

    def _hand_back(self, why: str) -> None:
        """Shutting down: release the lead and queue the coordination for another worker
        (which runs what never started and closes it)."""
        from deployments.leases import coordination_requeue

        lease_release(lease=self.lease)
        self.lease = None
        if self.coordination.targets.exclude(status__in=TARGET_TERMINAL).exists():
            coordination_requeue(coordination=self.coordination, why=why)
        else:
            self._finish()

    def _finish(self) -> None:
        coordination = self.coordination
        coordination.refresh_from_db(fields=["status"])
        if coordination.status in COORDINATION_TERMINAL:
            return  # cancelled while running
        targets = list(coordination.targets.order_by("environment_id"))
        failed = [target for target in targets if target.status != T.SUCCEEDED]
        if coordination.status in (C.LOCAL_TRIGGERING, C.LOCAL_DEPLOYING):
            healthy = sum(1 for target in targets if target.status == T.SUCCEEDED)
            transition(
                coordination,
                C.LOCAL_COMPLETED,
                stage=Stage.VERIFY,
                message=f"all environments finished: {healthy} succeeded, {len(failed)} did not",
                data={"succeeded": healthy, "failed": len(failed), "total": len(targets)},
            )
        if not failed:
            transition(coordination, C.COMPLETED, message=f"all {len(targets)} environments succeeded")
            return
        reasons = "; ".join(f"{target.environment_id} ({target.reason or target.status})" for target in failed)
        summary = f"{len(failed)} of {len(targets)} environments failed: {reasons}"
        transition(
            coordination,
            C.FAILED,
            message=summary,
            data={"failed": [target.environment_id for target in failed], "total": len(targets), "reasons": reasons},
            fields={"error": summary},
        )

    # --- delivery (lead and shards) ---------------------------------------------------------

    def _deliver(self) -> None:
        targets = list(
            self.coordination.targets.filter(status=T.PENDING)
            .select_related("remote_environment")
            .order_by("environment_id")
        )
        if not self.lead:
            targets.reverse()  # meet the lead in the middle instead of racing it for each claim
        self.targets = {target.pk: target for target in targets}
        if not targets:
            return
        limit = max(1, math.ceil(self.defaults.parallel_limit / self._tasks()))
        with ThreadPoolExecutor(max_workers=min(limit, len(targets)), thread_name_prefix="deliver") as pool:
            try:
                self._schedule(pool, targets, limit)
            except BaseException:
                # Let running deliveries end at once instead of holding the pool's shutdown.
                self._request_stop(StopKind.ERROR, "the coordinator stopped on an error")
                raise
        self._flush_output()

    def _schedule(self, pool: ThreadPoolExecutor, pending: list[CoordinationTarget], limit: int) -> None:
        """Claim targets as room frees up, apply the threads' reports, flush output, renew
        the lease, and watch for cancel and shutdown, until every claimed target ended."""
        in_flight: set[int] = set()
        last_cancel_check = last_callback_poll = time.monotonic()
        while pending or in_flight:
            if pending and len(in_flight) < limit and not self.stop.is_set() and not self.shutdown_requested_at:
                room = limit - len(in_flight)
                batch, pending = pending[:room], pending[room:]
                for target in self._claim(batch):
                    in_flight.add(target.pk)
                    pool.submit(deliver_and_report, *self._delivery_arguments(target))
            if pending and (self.stop_kind in (StopKind.CANCEL, StopKind.DEADLINE, StopKind.ERROR)):
                self._cancel_pending(pending)
                pending = []
            if pending and self.shutdown_requested_at:
                pending = []  # left pending for the worker that takes over
            self._apply_reports(in_flight)
            now = time.monotonic()
            if now - last_cancel_check >= CANCEL_CHECK_SECONDS:
                self._check_stop()
                last_cancel_check = now
            if self.awaiting_callback and now - last_callback_poll >= CALLBACK_POLL_SECONDS:
                self._collect_callbacks()
                last_callback_poll = now
            self._heartbeat()
            self._advance_to_deploying()

    def _delivery_arguments(self, target: CoordinationTarget) -> tuple:
        reporter = TargetReporter(target.pk, self.inbox, self.stop)
        self.reporters[target.pk] = reporter
        spec = target_spec(target.remote_environment)
        context = dataclasses.replace(
            self.context,
            callback_url=self.callback_urls.pop(target.pk, ""),
            deadline=time.time() + spec.timeout,
        )
        return (spec, context, self.defaults, reporter)

    def _claim(self, batch: list[CoordinationTarget]) -> list[CoordinationTarget]:
        """Conditional updates: of two tasks claiming the same target, one wins."""
        claimed = []
        with transaction.atomic():
            for target in batch:
                environment = target.remote_environment
                if environment is None:
                    transition(
                        target,
                        T.FAILED,
                        stage=Stage.TRIGGER,
                        message="the environment was deleted before it was triggered",
                        fields={"reason": "environment_deleted", "error": "environment deleted"},
                    )
                    continue
                if transition(
                    target,
                    T.TRIGGERING,
                    stage=Stage.TRIGGER,
                    message=f"connecting over {environment.connection_method} to {_where(environment)}",
                    data={"attempt": 1, "worker": self.lease.owner},
                    fields={"attempts": 1, "lease": self.lease},
                ):
                    if environment.connection_method in CALLBACK_METHODS:
                        self._issue_callback_token(target, environment.timeout)
                    claimed.append(target)
        return claimed

    def _issue_callback_token(self, target: CoordinationTarget, timeout: int) -> None:
        """A single-use, unguessable token bound to this target, expiring with its timeout."""
        if not settings.PLATFORM_BASE_URL:
            return
        token = secrets.token_urlsafe(32)
        CallbackToken.objects.update_or_create(
            target=target,
            defaults={
                "token_hash": hashlib.sha256(token.encode()).hexdigest(),
                "expires_at": timezone.now() + timedelta(seconds=timeout),
                "used_at": None,
                "result": None,
            },
        )
        self.callback_urls[target.pk] = f"{settings.PLATFORM_BASE_URL}/api/deployment/callback/{token}/"

    def _collect_callbacks(self) -> None:
        answered = CallbackToken.objects.filter(
            target_id__in=self.awaiting_callback, used_at__isnull=False
        ).values_list("target_id", "result")
        for target_pk, result in answered:
            self.awaiting_callback.discard(target_pk)
            self.reporters[target_pk].hand_over_callback(result)

    def _cancel_pending(self, pending: list[CoordinationTarget]) -> None:
        with transaction.atomic():
            for target in pending:
                transition(
                    target,
                    T.CANCELLED,
                    stage=Stage.TRIGGER,
                    message=f"not started: {self.stop_reason}",
                    fields={"reason": "cancelled", "error": self.stop_reason},
                )

    def _advance_to_deploying(self) -> None:
        if not self.lead or self.coordination.status != C.LOCAL_TRIGGERING:
            return
        if self.coordination.targets.filter(status__in=[T.PENDING, T.TRIGGERING]).exists():
            return
        transition(self.coordination, C.LOCAL_DEPLOYING, stage=Stage.RUN, message="every environment has started")

    # --- stopping --------------------------------------------------------------------------

    def _request_stop(self, kind: str, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_kind, self.stop_reason = kind, reason
            self.stop.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            return
        status = Coordination.objects.filter(pk=self.coordination.pk).values_list("status", flat=True).first()
        if status == C.CANCELLED:
            self._request_stop(StopKind.CANCEL, "the coordination was cancelled")
        elif time.monotonic() > self.deadline:
            self._request_stop(StopKind.DEADLINE, "the coordination ran out of time (Q_TIMEOUT)")
        elif self.shutdown_requested_at is None and _cluster_stopping():
            self.shutdown_requested_at = time.monotonic()
            logger.warning("the cluster is stopping: %s s grace for running sessions", self._grace())
        elif self.shutdown_requested_at and time.monotonic() - self.shutdown_requested_at >= self._grace():
            self._request_stop(StopKind.SHUTDOWN, f"the worker shut down ({self._grace():g} s grace period passed)")

    def _grace(self) -> float:
        return settings.DEPLOYMENT_SHUTDOWN_GRACE_SECONDS

    def catch_sigterm(self):
        """In a worker's main thread: on SIGTERM, stop claiming, give running sessions the
        grace period, then hang them up as interrupted; the rest goes to another worker.
        Returns the previous handler (None when not in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigterm(signum, frame):
            self.terminated_by_signal = True
            if self.shutdown_requested_at is None:
                self.shutdown_requested_at = time.monotonic()
                logger.warning("SIGTERM: %s s grace for running sessions", self._grace())

        return signal.signal(signal.SIGTERM, on_sigterm)

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_heartbeat >= max(1.0, settings.DEPLOYMENT_LEASE_SECONDS / 3):
            self.last_heartbeat = now
            lease_renew(lease=self.lease)

    # --- reports from delivery threads ---------------------------------------------------

    def _apply_reports(self, in_flight: set[int]) -> None:
        try:
            reports = [self.inbox.get(timeout=BATCH_WAIT_SECONDS)]
        except queue.Empty:
            return
        while True:
            try:
                reports.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        with transaction.atomic():
            for kind, target_pk, payload in reports:
                target = self.targets[target_pk]
                if kind == "output":
                    self.output.setdefault(target_pk, []).append(payload)
                elif kind == "started":
                    transition(target, T.RUNNING, stage=Stage.RUN, message=payload)
                elif kind == "retrying":
                    self._record_retry(target, *payload)
                elif kind == "health":
                    self._record_health(target, *payload)
                elif kind == "awaiting_callback":
                    self.awaiting_callback.add(target_pk)
                elif kind == "finished":
                    self._record_outcome(target, payload)
                    in_flight.discard(target_pk)
                    self.awaiting_callback.discard(target_pk)
                    self.reporters.pop(target_pk, None)
            # Output is written in the same batch it arrived in: a crash loses none of it.
            self._flush_output()

    def _record_retry(self, target: CoordinationTarget, attempt: int, error, delay: float) -> None:
        CoordinationTarget.objects.filter(pk=target.pk).update(attempts=attempt + 1)
        target.attempts = attempt + 1
        note(
            self.coordination,
            f"attempt {attempt} failed: {error.message}; retrying in {delay:g} s",
            stage=Stage.TRIGGER,
            target=target,
            data={"attempt": attempt, "reason": error.reason, "next_attempt": attempt + 1},
        )

    def _record_health(self, target: CoordinationTarget, healthy: bool, detail: str, latency_ms: int | None) -> None:
        if target.remote_environment_id:
            environment_record_health(
                environment_pk=target.remote_environment_id, healthy=healthy, detail=detail, latency_ms=latency_ms
            )
        note(
            self.coordination,
            f"{'healthy' if healthy else 'unhealthy'}: {detail}",
            stage=Stage.VERIFY,
            target=target,
            data={"healthy": healthy},
        )

    def _record_outcome(self, target: CoordinationTarget, outcome: Outcome) -> None:
        outcome = self._as_stopped(outcome)
        fields = {"reason": outcome.reason, "exit_code": outcome.exit_code}
        if outcome.status != T.SUCCEEDED:
            fields["error"] = outcome.message
        fields.update(self._output_fields(target))
        moved = transition(
            target,
            outcome.status,
            stage=Stage.VERIFY if outcome.reason == "health_check_failed" else Stage.RUN,
            message=outcome.message,
            data={**outcome.data, "exit_code": outcome.exit_code, "reason": outcome.reason},
            fields=fields,
        )
        if not moved:
            logger.warning("%s: outcome %s not recorded, status moved on", target.environment_id, outcome.status)

    def _as_stopped(self, outcome: Outcome) -> Outcome:
        """A delivery cut short ends as the stop's kind says."""
        if outcome.reason != "cancelled" or self.stop_kind in ("", StopKind.CANCEL):
            return outcome
        if self.stop_kind == StopKind.SHUTDOWN:
            return Outcome(T.INTERRUPTED, reason="worker_shutdown", message=f"stopped: {self.stop_reason}")
        return Outcome(
            T.FAILED,
            reason="timeout" if self.stop_kind == StopKind.DEADLINE else "internal_error",
            message=f"stopped: {self.stop_reason}",
        )

    # --- output ------------------------------------------------------------------------

    def _output_fields(self, target: CoordinationTarget) -> dict:
        chunks = self.output.pop(target.pk, None)
        if not chunks:
            return {}
        received = "".join(chunks)
        limit = settings.DEPLOYMENT_OUTPUT_TAIL_BYTES
        tail = (target.output_tail + received).encode("utf-8")[-limit:].decode("utf-8", errors="ignore")
        target.output_tail = tail
        target.output_bytes += len(received.encode("utf-8"))
        return {"output_tail": tail, "output_bytes": target.output_bytes}

    def _flush_output(self) -> None:
        for target_pk in list(self.output):
            target = self.targets[target_pk]
            CoordinationTarget.objects.filter(pk=target_pk).update(**self._output_fields(target))


_last_cluster_check = 0.0


def _cluster_stopping() -> bool:
    """Is the django-q2 cluster this worker belongs to shutting down (SIGTERM or Ctrl-C to
    `qcluster`)? Its sentinel publishes its status and worker pids in the shared cache;
    the worker itself gets no signal then, only a STOP after its task.

    Read-only on purpose: with the ORM broker, django-q2's own `Stat.get_all()` writes the
    list of cluster keys back (racing the sentinel's writes) and skips the key after each
    expired one it drops, so a worker polling it could miss its cluster's STOPPING status."""
    global _last_cluster_check
    now = time.monotonic()
    if now - _last_cluster_check < CLUSTER_CHECK_SECONDS:
        return False
    _last_cluster_check = now
    from django_q.brokers import Broker, get_broker
    from django_q.conf import Conf
    from django_q.signing import BadSignature, SignedPackage

    try:
        broker = get_broker()
        if type(broker).get_stats is Broker.get_stats and broker.cache is not None:
            # The ORM broker keeps the stats in Django's cache, under a list of keys.
            packs = [broker.cache.get(key) for key in broker.cache.get(Conf.Q_STAT) or []]
        else:  # Redis keeps them as its own keys, read without writing.
            packs = broker.get_stats(f"{Conf.Q_STAT}:*") or []
    except Exception:  # the cache is down: keep working; the lease protects the run
        return False
    for pack in packs:
        try:
            stat = SignedPackage.loads(pack) if pack else None
        except BadSignature:
            continue
        if stat is not None and os.getpid() in (stat.workers or []):
            return stat.status in (Conf.STOPPING, Conf.STOPPED)
    return False


def _where(environment) -> str:
    if environment.connection_method == "http_api" and environment.api_endpoint:
        return environment.api_endpoint
    if environment.connection_method == "webhook" and environment.webhook_url:
        return environment.webhook_url
    return environment.address


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
    run = CoordinationRun(coordination, lead=lead)
    previous_handler = run.catch_sigterm()
    try:
        run.run() if lead else run.run_shard()
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
    if run.terminated_by_signal:
        # This process was asked to terminate; now that the run is closed out, do so.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


def run_coordination(coordination: Coordination) -> None:
    _run(coordination, lead=True)


def run_coordination_shard(coordination: Coordination) -> None:
    _run(coordination, lead=False)
