"""The EC2 stage of a coordination: the main platform's instance, through the EC2 API.

A coordination's `ec2_deployment_config` selects the mode:

- `{}` ("reported"): the deploy script passed the instance id and public IP; they are
  recorded as given.
- `{"instance_id": ...}` ("wait"): wait until that instance is running and its status
  checks pass; record its public IP.
- `{"image_id", "instance_type", ...}` ("launch"): launch an instance (RunInstances), then
  the same waits; record the new instance's id and public IP.

`platform_health_url`, in any mode, then waits until the main platform answers 2xx there.

boto3 finds credentials and region through its standard chain; `AWS_ENDPOINT_URL` points it
at an emulator. An AWS error fails the stage with AWS's error code and message. Each AWS
call and health request runs in a helper thread while the coordinator's main thread keeps
its lease alive and watches for cancel; every wait is bounded by EC2_STAGE_TIMEOUT_SECONDS
from the coordination's start.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any

from django.conf import settings
from django.utils import timezone

from deployments.ec2.aws import EC2StageError, aws_error, client_token, instance_state, new_client, status_checks
from deployments.ec2.config import LAUNCH, REPORTED, TAG_COORDINATION, WAIT, ec2_mode
from deployments.models import Coordination, Stage
from deployments.transitions import note
from environments.health import check_health

REPORTED_DONE = "EC2 platform stage done"
# How long one health request may take, at most.
HEALTH_REQUEST_SECONDS = 10.0
# How often the main thread looks up from a call in flight (lease, cancel).
CALL_CHECK_SECONDS = 1.0


def stage_summary(coordination: Coordination) -> str:
    """The EC2 stage's first line: what it is about to do."""
    config = coordination.ec2_deployment_config or {}
    mode = ec2_mode(config)
    version = f"version {coordination.version or '-'}"
    if mode == LAUNCH:
        text = f"launching {config['image_id']} as {config['instance_type']} through the EC2 API, {version}"
    elif mode == WAIT:
        text = f"waiting for instance {config['instance_id']} through the EC2 API, {version}"
    else:
        parts = [f"instance {coordination.ec2_instance_id or '-'}", f"public IP {coordination.ec2_public_ip or '-'}"]
        text = "EC2 platform deployed by the deploy script (reported): " + ", ".join([*parts, version])
    if config.get("platform_health_url"):
        text += f"; then waiting for the platform at {config['platform_health_url']}"
    return text


class StageStopped(Exception):
    """The coordinator asked the stage to stop waiting (cancel, shutdown, its deadline)."""


class EC2Stage:
    """Runs the EC2 stage of one coordination, in the coordinator's main thread.

    1. "wait": check that the instance exists. "launch": launch it, unless a run of this
       coordination already did (its id is recorded: a resumed run or a retry).
    2. Wait until the instance is running; record its public IP.
    3. Wait until its status checks pass.
    4. With platform_health_url: wait until the platform answers 2xx there.

    `pause(seconds)` is the coordinator's: it waits while renewing the lease and returns
    False when the run must stop (then StageStopped is raised).
    """

    def __init__(self, coordination: Coordination, *, pause: Callable[[float], bool]):
        self.coordination = coordination
        self.config = coordination.ec2_deployment_config or {}
        self.pause = pause
        started = coordination.started_at or timezone.now()
        self.timeout = settings.EC2_STAGE_TIMEOUT_SECONDS
        self.deadline = started.timestamp() + self.timeout
        self.poll = settings.EC2_POLL_SECONDS
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ec2")
        self.client: Any = None  # a boto3 EC2 client once the stage needs one
        self.doing = "starting the EC2 stage"

    def run(self) -> None:
        try:
            mode = ec2_mode(self.config)
            if mode != REPORTED:
                self.client = self._call(new_client)
                instance_id = self._instance(mode)
                self._wait_running(instance_id)
                self._wait_status_checks(instance_id)
            if self.config.get("platform_health_url"):
                self._wait_healthy(self.config["platform_health_url"])
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def completed_message(self) -> str:
        c = self.coordination
        mode = ec2_mode(self.config)
        if mode == REPORTED:
            text = REPORTED_DONE
        else:
            text = f"instance {c.ec2_instance_id} is running (public IP {c.ec2_public_ip or 'none'}), status checks ok"
        if self.config.get("platform_health_url"):
            text += f"; platform healthy at {self.config['platform_health_url']}"
        return text

    # --- steps ---

    def _instance(self, mode: str) -> str:
        if mode == WAIT:
            instance_id = self.config["instance_id"]
            self.doing = f"looking up {instance_id}"
            self._call(self.client.describe_instances, InstanceIds=[instance_id])
            self._record(instance_id=instance_id)
            return instance_id
        if self.coordination.ec2_instance_id:
            instance_id = self.coordination.ec2_instance_id
            self._note(f"instance {instance_id} was already launched for this run; waiting for it", instance_id)
            return instance_id
        return self._launch()

    def _launch(self) -> str:
        config = self.config
        tags = {**config.get("tags", {}), TAG_COORDINATION: self.coordination.coordination_id}
        parameters = {
            "ImageId": config["image_id"],
            "InstanceType": config["instance_type"],
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(self.coordination.coordination_id),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        }
        optional = {
            "key_name": "KeyName",
            "security_group_ids": "SecurityGroupIds",
            "subnet_id": "SubnetId",
            "user_data": "UserData",
        }
        parameters.update({name: config[key] for key, name in optional.items() if key in config})
        self.doing = f"launching {config['image_id']}"
        response = self._call(self.client.run_instances, **parameters)
        instance_id = response["Instances"][0]["InstanceId"]
        self._record(instance_id=instance_id)
        self._note(f"launched {instance_id} ({config['instance_type']} from {config['image_id']})", instance_id)
        return instance_id

    def _wait_running(self, instance_id: str) -> None:
        from botocore.exceptions import WaiterError  # boto3 loads only for this stage

        self.doing = f"waiting for {instance_id} to be running"
        last_state = ""
        while True:
            try:
                self._call(self._attempt, "instance_running", instance_id)
                break
            except WaiterError as exc:
                response = self._failed_attempt(exc)
                state = instance_state(response) or "not visible yet"
                if "terminal failure state" in str(exc.kwargs.get("reason", "")):
                    raise EC2StageError(
                        "InstanceNotRunning", f"instance {instance_id} is {state}; it will not run by itself"
                    ) from None
                if state != last_state:
                    self._note(f"{instance_id} is {state}", instance_id, state=state)
                    last_state = state
            self._sleep()
        response = self._call(self.client.describe_instances, InstanceIds=[instance_id])
        instance = response["Reservations"][0]["Instances"][0]
        public_ip = instance.get("PublicIpAddress", "")
        self._record(instance_id=instance_id, public_ip=public_ip)
        shown = f"public IP {public_ip}" if public_ip else "no public IP"
        self._note(f"{instance_id} is running, {shown}", instance_id, state="running", public_ip=public_ip)

    def _wait_status_checks(self, instance_id: str) -> None:
        from botocore.exceptions import WaiterError  # boto3 loads only for this stage

        self.doing = f"waiting for the status checks of {instance_id}"
        last = ""
        while True:
            try:
                self._call(self._attempt, "instance_status_ok", instance_id)
                break
            except WaiterError as exc:
                checks = status_checks(self._failed_attempt(exc))
                if checks != last:
                    self._note(f"{instance_id} status checks: {checks}", instance_id)
                    last = checks
            self._sleep()
        self._note(f"{instance_id} passed its status checks", instance_id, status_checks="ok")

    def _wait_healthy(self, url: str) -> None:
        self.doing = f"waiting for the platform to answer healthy at {url}"
        last = ""
        while True:
            request_timeout = max(1.0, min(HEALTH_REQUEST_SECONDS, self.deadline - time.time()))
            result = self._call(
                check_health,
                url,
                timeout=request_timeout,
                retries=0,
                retry_delay=0,
                ca_bundle=settings.HTTP_CA_BUNDLE,
            )
            if result.healthy:
                self._note(f"platform healthy: {result.detail}", "", healthy=True)
                return
            if result.detail != last:
                self._note(f"platform not healthy yet: {result.detail}", "", healthy=False)
                last = result.detail
            self.doing = f"waiting for the platform to answer healthy at {url} (last: {result.detail})"
            self._sleep(code="PlatformUnhealthy")

    # --- helpers ---

    def _attempt(self, waiter_name: str, instance_id: str) -> None:
        """One try of a boto3 waiter; WaiterError when it has not succeeded (yet)."""
        self.client.get_waiter(waiter_name).wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 1})

    def _failed_attempt(self, exc) -> dict:
        """A waiter's answer that is not success: AWS errors end the stage (a missing
        instance right after launch is not one: AWS is eventually consistent)."""
        response = exc.last_response or {}
        error = response.get("Error") or {}
        if error.get("Code") and error["Code"] != "InvalidInstanceID.NotFound":
            raise EC2StageError(error["Code"], error.get("Message", "")) from None
        return response

    def _call(self, function, *args, **kwargs):
        """Run one blocking call in the helper thread; meanwhile keep the lease and watch
        for cancel. AWS's errors become EC2StageError with its code and message."""
        from botocore.exceptions import BotoCoreError, ClientError, WaiterError  # boto3 loads only for this stage

        future = self.pool.submit(function, *args, **kwargs)
        while True:
            try:
                return future.result(timeout=CALL_CHECK_SECONDS)
            except FutureTimeout:
                if not self.pause(0):
                    raise StageStopped() from None
                if time.time() > self.deadline:
                    raise self._timeout() from None
            except WaiterError:
                raise
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc) from None

    def _sleep(self, code: str = "EC2StageTimeout") -> None:
        remaining = self.deadline - time.time()
        if remaining <= 0:
            raise self._timeout(code)
        if not self.pause(min(self.poll, remaining)):
            raise StageStopped()

    def _timeout(self, code: str = "EC2StageTimeout") -> EC2StageError:
        return EC2StageError(
            code, f"not done within EC2_STAGE_TIMEOUT_SECONDS ({self.timeout} s of the run) while {self.doing}"
        )

    def _record(self, *, instance_id: str, public_ip: str | None = None) -> None:
        fields = {"ec2_instance_id": instance_id}
        if public_ip is not None:
            fields["ec2_public_ip"] = public_ip
        Coordination.objects.filter(pk=self.coordination.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.coordination, name, value)

    def _note(self, message: str, instance_id: str, **data) -> None:
        if instance_id:
            data["instance_id"] = instance_id
        note(self.coordination, message, stage=Stage.EC2, data=data)
