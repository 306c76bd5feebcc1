"""When and why a run stops early: the operator cancelled, the task is about to run out of
time, or the worker is shutting down (SIGTERM to the worker, or its cluster stopping)."""

import logging
import os
import signal
import threading
import time

from django.conf import settings

from deployments.cluster import cluster_of_worker_stopping
from deployments.models import COORDINATION_TERMINAL, Coordination, CoordinationStatus as C

logger = logging.getLogger(__name__)

# The run ends itself this long before django-q2 would kill the task.
DEADLINE_MARGIN_SECONDS = 60
# How often a run looks for a reason to stop (cancel, deadline, shutdown).
STOP_CHECK_SECONDS = 1.0
# How often the cluster's status is read from the cache.
CLUSTER_CHECK_SECONDS = 2.0


class StopKind:
    """Why a run stopped early; decides how the targets it was running end."""

    CANCEL = "cancel"  # the operator cancelled: cancelled
    SHUTDOWN = "shutdown"  # the worker is shutting down: interrupted, the rest requeued
    DEADLINE = "deadline"  # the task ran out of time: failed (timeout)
    ERROR = "error"


class Stopping:
    """The stop state of one run, shared with its delivery threads through `event`.

    A shutdown is noticed first (`shutting_down`): nothing new is claimed, and running
    sessions get DEPLOYMENT_SHUTDOWN_GRACE_SECONDS to end before they are stopped as
    interrupted. A cancel, the deadline or an error stop them at once."""

    def __init__(self, coordination_pk: int):
        self.coordination_pk = coordination_pk
        self.event = threading.Event()
        self.kind = ""
        self.reason = ""
        # How long this task may run, and when it must have ended.
        self.budget = settings.Q_TIMEOUT - DEADLINE_MARGIN_SECONDS
        self.deadline = time.monotonic() + self.budget
        self.shutdown_requested_at: float | None = None
        self.terminated_by_signal = False
        self._last_cluster_check = -CLUSTER_CHECK_SECONDS
        self._target_events: list[threading.Event] = []

    @property
    def grace(self) -> float:
        return settings.DEPLOYMENT_SHUTDOWN_GRACE_SECONDS

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_requested_at is not None

    def request(self, kind: str, reason: str) -> None:
        if not self.event.is_set():
            self.kind, self.reason = kind, reason
            self.event.set()
            for event in self._target_events:
                event.set()

    def target_event(self) -> threading.Event:
        """The stop event of one target's delivery: set by every stop of the run, and on
        its own when that target alone must stop (a newer coordination superseded it)."""
        event = threading.Event()
        self._target_events.append(event)
        if self.event.is_set():
            event.set()
        return event

    def check(self) -> None:
        """Look for a reason to stop: one query, plus the cluster's status every few seconds."""
        if self.event.is_set():
            return
        status = Coordination.objects.filter(pk=self.coordination_pk).values_list("status", flat=True).first()
        if status == C.CANCELLED:
            self.request(StopKind.CANCEL, "the coordination was cancelled")
        elif status in COORDINATION_TERMINAL or status is None:
            # Ended by someone else (closed out, deleted): nothing of it may go on running.
            self.request(StopKind.CANCEL, f"the coordination ended ({status or 'deleted'})")
        elif time.monotonic() > self.deadline:
            self.request(StopKind.DEADLINE, "the coordination ran out of time (Q_TIMEOUT)")
        elif self.shutdown_requested_at is None and self._cluster_stopping():
            self.shutdown_requested_at = time.monotonic()
            logger.warning("the cluster is stopping: %s s grace for running sessions", self.grace)
        elif self.shutdown_requested_at and time.monotonic() - self.shutdown_requested_at >= self.grace:
            self.request(StopKind.SHUTDOWN, f"the worker shut down ({self.grace:g} s grace period passed)")

    def _cluster_stopping(self) -> bool:
        now = time.monotonic()
        if now - self._last_cluster_check < CLUSTER_CHECK_SECONDS:
            return False
        self._last_cluster_check = now
        return cluster_of_worker_stopping(os.getpid())

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
                logger.warning("SIGTERM: %s s grace for running sessions", self.grace)

        return signal.signal(signal.SIGTERM, on_sigterm)
