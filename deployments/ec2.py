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

import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from deployments.models import Coordination, Stage
from deployments.transitions import note
from environments.health import check_health

REPORTED, WAIT, LAUNCH = "reported", "wait", "launch"
REPORTED_DONE = "EC2 platform stage done"

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
IMAGE_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
SECURITY_GROUP_ID = re.compile(r"^sg-[0-9a-f]{8,17}$")
SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
USER_DATA_MAX_BYTES = 16 * 1024  # AWS's limit, before base64
MAX_TAGS = 40  # AWS allows 50 per resource; we add our own
TAG_COORDINATION = "powerautomation:coordination"
# The keys that only make sense when launching.
LAUNCH_KEYS = ("instance_type", "key_name", "security_group_ids", "subnet_id", "user_data", "tags")
# How long one health request may take, at most.
HEALTH_REQUEST_SECONDS = 10.0
# How often the main thread looks up from a call in flight (lease, cancel).
CALL_CHECK_SECONDS = 1.0


# --- Validation ---------------------------------------------------------------------------


def _text(value, *, pattern: re.Pattern | None = None, hint: str = "", max_length: int = 255) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if pattern is not None and not pattern.match(value):
        return hint
    return None


def _security_groups(value) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of security group ids"
    for item in value:
        if not isinstance(item, str) or not SECURITY_GROUP_ID.match(item):
            return f"{item!r} is not a security group id (sg-0123456789abcdef0)"
    return None


def _user_data(value) -> str | None:
    if not isinstance(value, str):
        return "must be a string (the script or cloud-init config, not base64)"
    if len(value.encode("utf-8")) > USER_DATA_MAX_BYTES:
        return f"must be at most {USER_DATA_MAX_BYTES} bytes"
    return None


def _tags(value) -> str | None:
    if not isinstance(value, dict):
        return 'must be an object of tag names to values, e.g. {"Name": "platform"}'
    if len(value) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags"
    for key, item in value.items():
        if not key or len(key) > 128 or key.lower().startswith("aws:"):
            return f"tag name {key!r} must be 1-128 characters and not start with aws:"
        if key == TAG_COORDINATION:
            return f"tag {TAG_COORDINATION} is set by the platform"
        if not isinstance(item, str) or len(item) > 256:
            return f"tag {key!r} must have a string value of at most 256 characters"
    return None


def _http_url(value) -> str | None:
    if not isinstance(value, str) or len(value) > 2000:
        return "must be a URL of at most 2000 characters"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    return None


CHECKS: dict[str, Callable] = {
    "instance_id": lambda v: _text(v, pattern=INSTANCE_ID, hint="an EC2 instance id looks like i-0123456789abcdef0"),
    "image_id": lambda v: _text(v, pattern=IMAGE_ID, hint="an AMI id looks like ami-0123456789abcdef0"),
    "instance_type": lambda v: _text(v, pattern=INSTANCE_TYPE, hint="an instance type looks like t3.micro"),
    "key_name": _text,
    "security_group_ids": _security_groups,
    "subnet_id": lambda v: _text(v, pattern=SUBNET_ID, hint="a subnet id looks like subnet-0123456789abcdef0"),
    "user_data": _user_data,
    "tags": _tags,
    "platform_health_url": _http_url,
}


def validate_ec2_config(config: dict, *, ec2_instance_id: str = "") -> None:
    """Raise ValidationError naming `ec2_deployment_config.<key>` for every problem."""
    errors: dict[str, list[str]] = {}

    def problem(key: str, message: str) -> None:
        errors.setdefault(f"ec2_deployment_config.{key}", []).append(message)

    for key, value in config.items():
        check = CHECKS.get(key)
        if check is None:
            problem(key, f"unknown key; known keys: {', '.join(CHECKS)}")
            continue
        message = check(value)
        if message:
            problem(key, message)
    if "instance_id" in config and "image_id" in config:
        problem("instance_id", "give instance_id (wait for that instance) or image_id (launch one), not both")
    if "image_id" in config and "instance_type" not in config:
        problem("instance_type", "required with image_id")
    if "image_id" not in config:
        for key in LAUNCH_KEYS:
            if key in config:
                problem(key, "only used when launching an instance (with image_id)")
    wanted = config.get("instance_id")
    if isinstance(wanted, str) and ec2_instance_id and wanted != ec2_instance_id:
        problem("instance_id", f"differs from ec2_instance_id {ec2_instance_id!r}; give one of them")
    if errors:
        raise ValidationError(errors)


def ec2_mode(config: dict | None) -> str:
    config = config or {}
    if "image_id" in config:
        return LAUNCH
    if "instance_id" in config:
        return WAIT
    return REPORTED


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


# --- The stage ------------------------------------------------------------------------------


class EC2StageError(Exception):
    """The EC2 stage failed; `code` is AWS's error code when AWS said no."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StageStopped(Exception):
    """The coordinator asked the stage to stop waiting (cancel, shutdown, its deadline)."""


def client_token(coordination_id: str) -> str:
    """RunInstances' idempotency token: a second launch for the same coordination (a worker
    that died between launching and recording) returns the first instance."""
    return "pa-" + hashlib.sha256(coordination_id.encode()).hexdigest()[:48]


def _new_client():
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=20,
        retries={"mode": "standard", "max_attempts": 4},
        user_agent_extra="powerautomation-coordinator",
    )
    return boto3.session.Session().client("ec2", config=config)


def _instance_state(response: dict) -> str:
    for reservation in response.get("Reservations") or []:
        for instance in reservation.get("Instances") or []:
            return (instance.get("State") or {}).get("Name", "")
    return ""


def _status_checks(response: dict) -> str:
    for status in response.get("InstanceStatuses") or []:
        instance = (status.get("InstanceStatus") or {}).get("Status", "?")
        system = (status.get("SystemStatus") or {}).get("Status", "?")
        return f"instance {instance}, system {system}"
    return "not reported yet"


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
        self.client = None
        self.doing = "starting the EC2 stage"

    def run(self) -> None:
        try:
            mode = ec2_mode(self.config)
            if mode != REPORTED:
                self.client = self._call(_new_client)
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
        from botocore.exceptions import WaiterError

        self.doing = f"waiting for {instance_id} to be running"
        last_state = ""
        while True:
            try:
                self._call(self._attempt, "instance_running", instance_id)
                break
            except WaiterError as exc:
                response = self._failed_attempt(exc)
                state = _instance_state(response) or "not visible yet"
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
        from botocore.exceptions import WaiterError

        self.doing = f"waiting for the status checks of {instance_id}"
        last = ""
        while True:
            try:
                self._call(self._attempt, "instance_status_ok", instance_id)
                break
            except WaiterError as exc:
                checks = _status_checks(self._failed_attempt(exc))
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
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, WaiterError

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
            except ClientError as exc:
                error = exc.response.get("Error") or {}
                raise EC2StageError(error.get("Code") or "ClientError", error.get("Message") or str(exc)) from None
            except NoCredentialsError as exc:
                raise EC2StageError("NoCredentials", f"{exc} (boto3's standard credential chain found none)") from None
            except NoRegionError as exc:
                raise EC2StageError("NoRegion", f"{exc} (set AWS_DEFAULT_REGION)") from None
            except BotoCoreError as exc:
                raise EC2StageError(type(exc).__name__, str(exc)) from None

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
