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
import queue
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
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
    TargetStatus as T,
)
from deployments.transitions import note, transition
from environments.config import DeploymentDefaults
from environments.connectors import ConnectorError, DeploymentContext, Target, connector_for
from environments.connectors.http import NOT_VERIFIED
from environments.health import check_health
from environments.services import environment_record_health

logger = logging.getLogger(__name__)

BATCH_WAIT_SECONDS = 0.1
OUTPUT_FLUSH_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 1.0
CALLBACK_POLL_SECONDS = 0.5
# The coordinator ends its own run this long before django-q2 would kill the task.
DEADLINE_MARGIN_SECONDS = 60
# Connection retries wait retry_delay, then twice that, and so on, up to this.
MAX_RETRY_DELAY_SECONDS = 300
# Methods whose agent reports the run's end by calling back.
CALLBACK_METHODS = frozenset({"http_api", "webhook"})


@dataclass(frozen=True)
class Outcome:
    """How one target's delivery ended."""

    status: str
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    data: dict = field(default_factory=dict)


class _TargetReporter:
    """What a delivery thread has to tell the main thread; see connectors.base.Reporter."""

    def __init__(self, target_pk: int, inbox: queue.SimpleQueue, stop: threading.Event):
        self.target_pk = target_pk
        self.inbox = inbox
        self.stop = stop
        self.started = False
        self.callback_arrived = threading.Event()
        self.callback_result: dict | None = None

    def _send(self, kind: str, payload=None) -> None:
        self.inbox.put((kind, self.target_pk, payload))

    def script_started(self, detail: str) -> None:
        self.started = True
        self._send("started", detail)

    def output(self, text: str) -> None:
        self._send("output", text)

    def wait_for_callback(self, deadline: float) -> dict | None:
        self._send("awaiting_callback")
        while not self.stop.is_set():
            remaining = deadline - time.time()
            if remaining <= 0:
                return None
            if self.callback_arrived.wait(min(remaining, 1.0)):
                return self.callback_result
        return None

    def hand_over_callback(self, result: dict) -> None:
        """Called by the main thread when the agent's callback is in the database."""
        self.callback_result = result
        self.callback_arrived.set()

    def retrying(self, attempt: int, error: ConnectorError, delay: float) -> None:
        self._send("retrying", (attempt, error, delay))

    def health_checked(self, healthy: bool, detail: str, latency_ms: int | None = None) -> None:
        self._send("health", (healthy, detail, latency_ms))

    def finished(self, outcome: Outcome) -> None:
        self._send("finished", outcome)


def target_spec(environment) -> Target:
    return Target(**{name: getattr(environment, name) for name in Target.__dataclass_fields__})


def deliver(spec: Target, context: DeploymentContext, defaults: DeploymentDefaults, reporter) -> Outcome:
    """Trigger one environment, wait for its script, verify its health. Runs in a thread.

    Only connection failures before the script started are retried: once it runs, a second
    start could do its work twice, and a script that exited non-zero is an answer.
    """
    connector = connector_for(spec.connection_method)
    for attempt in range(1, defaults.retry_count + 2):
        try:
            result = connector.run(spec, dataclasses.replace(context, attempt=attempt), reporter)
            break
        except ConnectorError as exc:
            if exc.reason == "cancelled":
                return Outcome(T.CANCELLED, reason="cancelled", message=exc.message)
            if exc.permanent or reporter.started or attempt > defaults.retry_count:
                return Outcome(T.FAILED, reason=exc.reason, message=exc.message, data=exc.data)
            delay = min(defaults.retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)
            reporter.retrying(attempt, exc, delay)
            if reporter.stop.wait(delay):
                return Outcome(T.CANCELLED, reason="cancelled", message=f"stopped before retrying: {exc.message}")
    if result.exit_code != 0:
        return Outcome(
            T.FAILED, reason="exit_code", message=f"script exited with {result.exit_code}", exit_code=result.exit_code
        )
    if spec.health_check_url and defaults.enable_health_check:
        health = check_health(
            spec.health_check_url,
            timeout=defaults.health_check_timeout,
            retries=defaults.health_check_retries,
            retry_delay=defaults.retry_delay,
            stop=reporter.stop,
            ca_bundle=context.ca_bundle,
        )
        reporter.health_checked(health.healthy, health.detail, health.latency_ms)
        if not health.healthy:
            return Outcome(T.FAILED, reason="health_check_failed", message=health.detail, exit_code=0)
    if result.note == NOT_VERIFIED:
        return Outcome(T.SUCCEEDED, reason="delivered_not_verified", message=NOT_VERIFIED, exit_code=None)
    message = "script exited with 0" + (f" ({result.note})" if result.note else "")
    return Outcome(T.SUCCEEDED, message=message, exit_code=0)


def _deliver_and_report(spec, context, defaults, reporter) -> None:
    try:
        outcome = deliver(spec, context, defaults, reporter)
    except ConnectorError as exc:
        outcome = Outcome(T.FAILED, reason=exc.reason, message=exc.message, data=exc.data)
    except Exception as exc:  # a bug must fail this target, not the whole coordination
        logger.exception("delivery to %s failed unexpectedly", spec.environment_id)
        outcome = Outcome(T.FAILED, reason="internal_error", message=f"internal error: {type(exc).__name__}: {exc}")
    reporter.finished(outcome)


class CoordinationRun:
    """The main thread of one coordination run."""

    def __init__(self, coordination: Coordination):
        self.coordination = coordination
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
        self.targets: dict[int, CoordinationTarget] = {}
        self.output: dict[int, list[str]] = {}
        self.reporters: dict[int, _TargetReporter] = {}
        self.awaiting_callback: set[int] = set()
        self.callback_urls: dict[int, str] = {}
        self.deadline = time.monotonic() + settings.Q_TIMEOUT - DEADLINE_MARGIN_SECONDS
        self.stop_reason = ""

    # --- stages ------------------------------------------------------------------------

    def run(self) -> None:
        """1. Claim the coordination (a second delivery of the same task finds it taken).
        2. EC2 stage, "reported" mode: record what the deploy script passed.
        3. Trigger every pending target, at most `parallel_limit` at once.
        4. When all have ended, complete or fail the coordination with their reasons."""
        coordination = self.coordination
        if coordination.status in COORDINATION_TERMINAL:
            return
        if coordination.status == C.PENDING:
            if not transition(
                coordination,
                C.EC2_DEPLOYING,
                stage=Stage.EC2,
                message=self._ec2_summary(),
                data={"mode": "reported"},
            ):
                return
        else:
            self._close_out_unknown_targets()
        if coordination.status == C.EC2_DEPLOYING:
            transition(coordination, C.EC2_COMPLETED, stage=Stage.EC2, message="EC2 platform stage done")
        targets = list(coordination.targets.select_related("remote_environment").order_by("environment_id"))
        self.targets = {target.pk: target for target in targets}
        if coordination.status == C.EC2_COMPLETED:
            transition(
                coordination,
                C.LOCAL_TRIGGERING,
                stage=Stage.TRIGGER,
                message=f"triggering {len(targets)} environments",
                data={"targets": len(targets), "parallel_limit": self.defaults.parallel_limit},
            )
        self._fan_out([target for target in targets if target.status == T.PENDING])
        self._finish()

    def _ec2_summary(self) -> str:
        c = self.coordination
        parts = [f"instance {c.ec2_instance_id or '-'}", f"public IP {c.ec2_public_ip or '-'}"]
        parts.append(f"version {c.version or '-'}")
        return "EC2 platform deployed by the deploy script (reported): " + ", ".join(parts)

    def _close_out_unknown_targets(self) -> None:
        """This task was delivered again after the worker running it died. Targets it had
        started have an unknown outcome: they are not started a second time."""
        for target in self.coordination.targets.filter(status__in=[T.TRIGGERING, T.RUNNING]):
            transition(
                target,
                T.INTERRUPTED,
                stage=Stage.RUN,
                message="the worker running this environment stopped; its outcome is unknown",
                fields={"reason": "interrupted", "error": "worker stopped while the script ran; outcome unknown"},
            )

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

    # --- fan-out -----------------------------------------------------------------------

    def _fan_out(self, pending: list[CoordinationTarget]) -> None:
        if not pending:
            return
        limit = max(1, self.defaults.parallel_limit)
        with ThreadPoolExecutor(max_workers=min(limit, len(pending)), thread_name_prefix="deliver") as pool:
            try:
                self._schedule(pool, pending, limit)
            except BaseException:
                # Let running deliveries end at once instead of holding the pool's shutdown.
                self.stop_reason = self.stop_reason or "the coordinator stopped on an error"
                self.stop.set()
                raise
        self._flush_output()

    def _schedule(self, pool: ThreadPoolExecutor, pending: list[CoordinationTarget], limit: int) -> None:
        """Start targets as room frees up, apply the threads' reports, flush output, and
        watch for a cancel, until every started target has reported its end."""
        in_flight: set[int] = set()
        last_flush = last_cancel_check = last_callback_poll = time.monotonic()
        while pending or in_flight:
            if pending and len(in_flight) < limit and not self.stop.is_set():
                room = limit - len(in_flight)
                batch, pending = pending[:room], pending[room:]
                for target in self._claim(batch):
                    in_flight.add(target.pk)
                    pool.submit(_deliver_and_report, *self._delivery_arguments(target))
            if self.stop.is_set() and pending:
                self._cancel_pending(pending)
                pending = []
            self._apply_reports(in_flight)
            now = time.monotonic()
            if now - last_flush >= OUTPUT_FLUSH_SECONDS:
                self._flush_output()
                last_flush = now
            if now - last_cancel_check >= CANCEL_CHECK_SECONDS:
                self._check_stop()
                last_cancel_check = now
            if self.awaiting_callback and now - last_callback_poll >= CALLBACK_POLL_SECONDS:
                self._collect_callbacks()
                last_callback_poll = now
            self._advance_to_deploying(pending)

    def _delivery_arguments(self, target: CoordinationTarget) -> tuple:
        reporter = _TargetReporter(target.pk, self.inbox, self.stop)
        self.reporters[target.pk] = reporter
        spec = target_spec(target.remote_environment)
        context = dataclasses.replace(
            self.context,
            callback_url=self.callback_urls.pop(target.pk, ""),
            deadline=time.time() + spec.timeout,
        )
        return (spec, context, self.defaults, reporter)

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

    def _claim(self, batch: list[CoordinationTarget]) -> list[CoordinationTarget]:
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
                    data={"attempt": 1},
                    fields={"attempts": 1},
                ):
                    if environment.connection_method in CALLBACK_METHODS:
                        self._issue_callback_token(target, environment.timeout)
                    claimed.append(target)
        return claimed

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

    def _advance_to_deploying(self, pending: list) -> None:
        if self.coordination.status != C.LOCAL_TRIGGERING or pending:
            return
        if any(target.status in (T.PENDING, T.TRIGGERING) for target in self.targets.values()):
            return
        transition(self.coordination, C.LOCAL_DEPLOYING, stage=Stage.RUN, message="every environment has started")

    def _check_stop(self) -> None:
        if self.stop.is_set():
            return
        status = Coordination.objects.filter(pk=self.coordination.pk).values_list("status", flat=True).first()
        if status == C.CANCELLED:
            self.stop_reason = "the coordination was cancelled"
            self.stop.set()
        elif time.monotonic() > self.deadline:
            self.stop_reason = "the coordination ran out of time (Q_TIMEOUT)"
            self.stop.set()

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

    def _record_retry(self, target: CoordinationTarget, attempt: int, error: ConnectorError, delay: float) -> None:
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
        if not self.output:
            return
        with transaction.atomic():
            for target_pk in list(self.output):
                target = self.targets[target_pk]
                CoordinationTarget.objects.filter(pk=target_pk).update(**self._output_fields(target))


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


def run_coordination(coordination: Coordination) -> None:
    started = time.monotonic()
    logger.info("coordination %s: run starts", coordination.coordination_id)
    try:
        CoordinationRun(coordination).run()
    except Exception as exc:
        logger.exception("coordination %s: run broke off", coordination.coordination_id)
        fail_unfinished(coordination, f"the coordinator stopped on an error: {type(exc).__name__}: {exc}")
    coordination.refresh_from_db(fields=["status"])
    logger.info(
        "coordination %s: run ends %s after %.2f s",
        coordination.coordination_id,
        coordination.status,
        time.monotonic() - started,
    )

