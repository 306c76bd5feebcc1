"""The rollout's waves, between two deliveries: when the open wave has ended, decide what
comes next (spend the failure budget, park for approval, pause, open the next wave).

Everything that decides lives in the database (`Coordination.wave`, `next_wave_at`,
`approved_at`, the targets' statuses), and every move is a conditional update: a worker
killed anywhere in here and another that takes over never open a wave early or twice,
and never lose an approval.
"""

import time
from datetime import timedelta

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from deployments.leases import Heartbeat, LeaseLost
from deployments.models import Coordination, CoordinationStatus as C, RunLease, Stage, TargetStatus as T
from deployments.queueing import queue_notification
from deployments.runner.budget import FAILURE_STATUSES, FailureBudget
from deployments.runner.stopping import STOP_CHECK_SECONDS, Stopping
from deployments.transitions import note, transition
from environments import bounds
from environments.rollout import APPROVAL

OPENED, DONE, PARKED, STOPPED, HAND_BACK = "opened", "done", "parked", "stopped", "hand_back"
# A pause longer than the task may run: the worker is freed, and the reaper hands the
# coordination to a worker once the pause is over.
SLEEPING = "sleeping"
# A pause that would run into the task's deadline goes on in a fresh task instead.
PAUSE_HAND_BACK_MARGIN_SECONDS = 30
# A wave whose longest environment timeout (plus this) does not fit in what is left of the
# task opens in a fresh task instead, once this task has done some work: a rollout of many
# waves may run far longer than Q_TIMEOUT, while each wave fits in one task.
WAVE_HAND_BACK_MARGIN_SECONDS = 30
WAVE_HAND_BACK_MIN_USED_SECONDS = 5


def wave_sizes(coordination: Coordination) -> list[int]:
    """The waves' sizes; a coordination created before rollouts existed has one wave."""
    waves = (coordination.rollout or {}).get("waves")
    return waves if isinstance(waves, list) and waves else [coordination.targets.count()]


class Waves:
    def __init__(self, coordination: Coordination, *, stopping: Stopping, heartbeat: Heartbeat):
        self.coordination = coordination
        self.stopping = stopping
        self.heartbeat = heartbeat
        self.sizes = wave_sizes(coordination)
        self.rollout = coordination.rollout or {}

    def wave_open(self) -> bool:
        """A wave is open and some target of it has not ended."""
        coordination = self.coordination
        if coordination.wave == 0:
            return False
        return coordination.targets.filter(
            wave__lte=coordination.wave, status__in=[T.PENDING, T.TRIGGERING, T.RUNNING]
        ).exists()

    def advance(self) -> str:
        """The open wave has ended (or none was opened yet): what comes next.
        DONE: no further wave (all ran, or the failure budget is spent: the rest cancelled).
        PARKED: awaiting an ADMIN's approval; the task leaves (approving queues a new one).
        STOPPED / HAND_BACK: a stop or a shutdown came during a pause.
        OPENED: the next wave is open; deliver it."""
        coordination = self.coordination
        budget = FailureBudget(coordination)
        if budget.spent():
            budget.stop_the_rest()
            return DONE
        if coordination.wave >= len(self.sizes):
            return DONE
        if coordination.wave == 1 and self.rollout.get("pause_after_first_batch") == APPROVAL:
            if coordination.approved_at is None:
                return self._park()
        elif coordination.wave >= 1:
            step = self._pause()
            if step:
                return step
        if self._next_wave_outlasts_task():
            return HAND_BACK
        return self._open_next()

    def _next_wave_outlasts_task(self) -> bool:
        """The next wave's longest run would not fit in what is left of this task, and a
        fresh task would have more time (so a new task never hands back at once)."""
        coordination = self.coordination
        left = self.stopping.deadline - time.monotonic()
        if self.stopping.budget - left < WAVE_HAND_BACK_MIN_USED_SECONDS:
            return False
        longest = (
            coordination.targets.filter(wave=coordination.wave + 1, status=T.PENDING)
            .aggregate(longest=Max("remote_environment__timeout"))
            .get("longest")
        )
        return longest is not None and bounds.TIMEOUT.clamp_int(longest) + WAVE_HAND_BACK_MARGIN_SECONDS > left

    def _pause_seconds(self) -> int:
        """After the first wave: pause_after_first_batch when it is set, else (as between
        every later pair of waves) batch_pause_seconds."""
        first = self.rollout.get("pause_after_first_batch") if self.coordination.wave == 1 else None
        seconds = first if first is not None else self.rollout.get("batch_pause_seconds")
        return seconds if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0 else 0

    def _pause(self) -> str:
        """Wait until `next_wave_at` (set once: a worker that takes over waits out the same
        pause, not a new one). Returns "" when the pause is over."""
        coordination = self.coordination
        seconds = self._pause_seconds()
        if not seconds:
            return ""
        if coordination.next_wave_at is None:
            resume = timezone.now() + timedelta(seconds=seconds)
            with transaction.atomic():
                if Coordination.objects.filter(pk=coordination.pk, wave=coordination.wave, next_wave_at=None).update(
                    next_wave_at=resume
                ):
                    note(
                        coordination,
                        f"⏸️ pausing {seconds} s before wave {coordination.wave + 1} of {len(self.sizes)}",
                        stage=Stage.RUN,
                        data={"pause_seconds": seconds, "next_wave_at": resume.isoformat(), "wave": coordination.wave},
                    )
            coordination.refresh_from_db(fields=["next_wave_at"])
        resume_at = coordination.next_wave_at
        if resume_at and (resume_at - timezone.now()).total_seconds() > (
            self.stopping.deadline - time.monotonic() - PAUSE_HAND_BACK_MARGIN_SECONDS
        ):
            return self._sleep(resume_at)
        while coordination.next_wave_at and timezone.now() < coordination.next_wave_at:
            self.stopping.check()
            if self.stopping.kind:
                return STOPPED
            left = (coordination.next_wave_at - timezone.now()).total_seconds()
            if self.stopping.shutting_down:
                return HAND_BACK
            self.heartbeat.beat()
            time.sleep(min(STOP_CHECK_SECONDS, max(left, 0.01)))
        return ""

    def _sleep(self, resume_at) -> str:
        """The pause outlasts this task: free the worker rather than hold it (or hand the
        coordination from task to task) for the whole pause. Said once per pause."""
        coordination = self.coordination
        if not coordination.events.filter(data__sleeping_until=resume_at.isoformat()).exists():
            note(
                coordination,
                f"⏸️ the pause outlasts a worker task: no worker holds the rollout until {resume_at:%Y-%m-%d %H:%M:%S} "
                "UTC, then the next free worker takes it up",
                stage=Stage.RUN,
                data={"sleeping_until": resume_at.isoformat(), "wave": coordination.wave},
            )
        return SLEEPING

    def _park(self) -> str:
        """The canary wave has ended: wait for an ADMIN's approval (or a cancel), in the
        database. The notification webhook hears of it."""
        coordination = self.coordination
        if coordination.status == C.LOCAL_TRIGGERING and not transition(
            coordination, C.LOCAL_DEPLOYING, stage=Stage.RUN, message="every environment of the first wave has ended"
        ):
            return STOPPED
        targets = coordination.targets.filter(wave=1)
        succeeded = targets.filter(status=T.SUCCEEDED).count()
        failed = targets.filter(status__in=FAILURE_STATUSES).count()
        remaining = sum(self.sizes[1:])
        with transaction.atomic():
            if not transition(
                coordination,
                C.AWAITING_APPROVAL,
                stage=Stage.RUN,
                message=f"✋ first wave done ({succeeded} succeeded, {failed} failed): awaiting an ADMIN's approval "
                f"to start the other {remaining} environments",
                data={"wave": 1, "succeeded": succeeded, "failed": failed, "remaining": remaining},
            ):
                return STOPPED
            # Let go of the lead in the same commit: an approval that comes at once queues a
            # lead that must find the lease free.
            RunLease.objects.filter(pk=self.heartbeat.lease.pk).delete()
            pk = coordination.pk
            transaction.on_commit(lambda: queue_notification(coordination_pk=pk, kind="awaiting_approval"))
        return PARKED

    def _open_next(self) -> str:
        coordination = self.coordination
        number = coordination.wave + 1
        size = self.sizes[number - 1]
        with transaction.atomic():
            if not Coordination.objects.filter(pk=coordination.pk, wave=coordination.wave).update(
                wave=number, next_wave_at=None
            ):
                # Only another lead moves the wave: we were presumed dead and it took over.
                raise LeaseLost(f"another lead opened wave {number} of {coordination.coordination_id}")
            if len(self.sizes) > 1:
                note(
                    coordination,
                    f"📦 wave {number} of {len(self.sizes)}: {size} environment{'s' if size != 1 else ''}",
                    stage=Stage.TRIGGER,
                    data={"wave": number, "waves": len(self.sizes), "size": size},
                )
        coordination.wave, coordination.next_wave_at = number, None
        return OPENED
