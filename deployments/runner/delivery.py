"""The delivery side of a coordination run: what each thread does for one target.

Threads never touch the database. They report through a queue to the coordinator's
main thread (deployments.runner.schedule), which is the only writer.
"""

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from deployments.models import TargetStatus as T
from environments.config import DeploymentDefaults
from environments.connectors import ConnectorError, DeploymentContext, Target, connector_for
from environments.connectors.http import NOT_VERIFIED
from environments.health import check_health
from powerautomation.structured_logging import log_context

logger = logging.getLogger(__name__)

# Connection retries wait retry_delay, then twice that, and so on, up to this.
MAX_RETRY_DELAY_SECONDS = 300
# How long a detached run's thread waits for its end to be committed.
END_RECORD_WAIT_SECONDS = 60
# A detached run this worker let go of (shutting down): it keeps running, and the target
# keeps its status for the next worker.
HANDED_OVER = "handed_over"


@dataclass(frozen=True)
class Outcome:
    """How one target's delivery ended."""

    status: str
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    data: dict = field(default_factory=dict)


class TargetReporter:
    """What a delivery thread has to tell the main thread; see connectors.base.Reporter."""

    def __init__(self, target_pk: int, inbox: queue.SimpleQueue, stop: threading.Event):
        self.target_pk = target_pk
        self.inbox = inbox
        self.stop = stop
        self.hand_over = threading.Event()
        self.started = False
        self.callback_arrived = threading.Event()
        self.callback_result: dict | None = None
        # A detached run's end, once committed (script_ended waits for it).
        self.end_recorded = threading.Event()
        self.end_kept = False

    def _send(self, kind: str, payload=None) -> None:
        self.inbox.put((kind, self.target_pk, payload))

    def script_started(self, detail: str) -> None:
        self.started = True
        self._send("started", detail)

    def output(self, text: str, *, end_offset: int | None = None) -> None:
        self._send("output", (text, end_offset))

    def script_ended(self, exit_code: int | None) -> bool:
        self.end_recorded.clear()
        self._send("ended", exit_code)
        # The main thread commits it within a batch (a tenth of a second); a main thread
        # that stopped never answers, and the run directory is then left for later.
        self.end_recorded.wait(END_RECORD_WAIT_SECONDS)
        return self.end_recorded.is_set() and self.end_kept

    def end_committed(self, kept: bool) -> None:
        """Called by the main thread once a detached run's end is committed (or refused)."""
        self.end_kept = kept
        self.end_recorded.set()

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
                return Outcome(T.CANCELLED, reason="cancelled", message=exc.message, data=exc.data)
            if exc.reason == HANDED_OVER:
                return Outcome(T.RUNNING, reason=HANDED_OVER, message=exc.message, data=exc.data)
            if exc.reason == "unreachable":
                # A detached run whose machine could not be reached again: outcome unknown.
                return Outcome(T.INTERRUPTED, reason="unreachable", message=exc.message, data=exc.data)
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
        if not health.healthy and reporter.stop.is_set():
            # Stopped while checking (a cancel, a newer coordination, the deadline): that is
            # the outcome, not an unhealthy machine (which would spend a failure budget).
            return Outcome(T.CANCELLED, reason="cancelled", message="stopped during the health check", exit_code=0)
        reporter.health_checked(health.healthy, health.detail, health.latency_ms)
        if not health.healthy:
            return Outcome(T.FAILED, reason="health_check_failed", message=health.detail, exit_code=0)
    if result.note == NOT_VERIFIED:
        return Outcome(T.SUCCEEDED, reason="delivered_not_verified", message=NOT_VERIFIED, exit_code=None)
    message = "script exited with 0" + (f" ({result.note})" if result.note else "")
    return Outcome(T.SUCCEEDED, message=message, exit_code=0)


def deliver_and_report(spec, context, defaults, reporter) -> None:
    # A pool thread starts with no log context: whatever logs in it (a connector, a library)
    # is about this coordination and this environment.
    with log_context(coordination_id=context.coordination_id, environment_id=spec.environment_id):
        try:
            outcome = deliver(spec, context, defaults, reporter)
        except ConnectorError as exc:
            outcome = Outcome(T.FAILED, reason=exc.reason, message=exc.message, data=exc.data)
        except Exception as exc:  # a bug must fail this target, not the whole coordination
            logger.exception("delivery to %s failed unexpectedly", spec.environment_id)
            outcome = Outcome(T.FAILED, reason="internal_error", message=f"internal error: {type(exc).__name__}: {exc}")
        reporter.finished(outcome)
