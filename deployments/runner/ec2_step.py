"""The EC2 stage as a step of the run: run it (deployments.ec2.stage), then complete it or
fail the coordination. A failure there triggers no environment."""

import dataclasses
import time

from django.db import transaction

from deployments.ec2.aws import EC2StageError
from deployments.ec2.config import ec2_mode
from deployments.ec2.stage import EC2Stage, StageStopped
from deployments.leases import Heartbeat
from deployments.models import Coordination, CoordinationStatus as C, Stage, TargetStatus as T
from deployments.runner.stopping import STOP_CHECK_SECONDS, StopKind, Stopping
from deployments.transitions import transition
from environments.connectors import DeploymentContext


class EC2Step:
    """`run()` answers what the run does next: "go" (stage completed, `context` now has the
    instance id and IP), "stop" (failed or cancelled: the run ends), or "hand_back" (the
    worker is shutting down)."""

    def __init__(self, coordination: Coordination, *, stopping: Stopping, heartbeat: Heartbeat):
        self.coordination = coordination
        self.stopping = stopping
        self.heartbeat = heartbeat

    def run(self, context: DeploymentContext) -> tuple[str, DeploymentContext]:
        coordination = self.coordination
        stage = EC2Stage(coordination, pause=self.pause)
        try:
            stage.run()
        except EC2StageError as exc:
            self._fail(exc)
            return "stop", context
        except StageStopped:
            return self._stopped(), context
        context = dataclasses.replace(
            context, ec2_instance_id=coordination.ec2_instance_id, ec2_public_ip=coordination.ec2_public_ip
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
        return "go", context

    def pause(self, seconds: float) -> bool:
        """The EC2 stage waits here: the lease stays alive, cancel and shutdown are noticed
        within a second. False: stop waiting."""
        end = time.monotonic() + seconds
        while True:
            self.heartbeat.beat()
            self.stopping.check()
            if self.stopping.stopped or self.stopping.shutting_down:
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(remaining, STOP_CHECK_SECONDS))

    def _stopped(self) -> str:
        stopping = self.stopping
        if stopping.kind == StopKind.CANCEL:
            return "stop"  # coordination_cancel already cancelled the environments
        if stopping.shutting_down and stopping.kind in ("", StopKind.SHUTDOWN):
            return "hand_back"
        code = "CoordinationTimeout" if stopping.kind == StopKind.DEADLINE else "Stopped"
        self._fail(EC2StageError(code, stopping.reason))
        return "stop"

    def _fail(self, error: EC2StageError) -> None:
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
