"""The original PowerAutomation component's Python API, over the platform's REST API.

A script written for the original runs with only its import and constructor changed:
`RemoteDeploymentCoordinator(url=..., token=...)` (both default to POWERAUTOMATION_URL and
POWERAUTOMATION_TOKEN). The platform does the work: `register_remote_environment` creates
or replaces the environment there, `coordinate_deployment` triggers a run and follows its
events to the end; the result has the original's fields, `logs` being the stage log."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any
from urllib.parse import quote

from powerautomation_client.api import Client
from powerautomation_client.config import load_config
from powerautomation_client.errors import NotFoundError
from powerautomation_client.follow import Follower
from powerautomation_client.stage_log import Run, _time, duration, format_event, format_total

logger = logging.getLogger(__name__)

# The platform's ec2_deployment_config keys (its EC2 stage); the original's other keys
# (region, deployment_strategy, an EC2 deploy's result) describe a platform deploy that
# the deploy script has done: they are noted in the result's logs, not sent.
EC2_LAUNCH_KEYS = ("image_id", "instance_type", "key_name", "security_group_ids", "subnet_id", "user_data", "tags")


class RemoteEnvironmentType(Enum):
    MAC_LOCAL = "mac_local"
    WINDOWS_LOCAL = "windows_local"
    LINUX_LOCAL = "linux_local"
    DOCKER_CONTAINER = "docker_container"  # the platform's "docker"


class DeploymentCoordinationStatus(Enum):
    """The original's values, and the platform's two more."""

    PENDING = "pending"
    EC2_DEPLOYING = "ec2_deploying"
    EC2_COMPLETED = "ec2_completed"
    LOCAL_TRIGGERING = "local_triggering"
    LOCAL_DEPLOYING = "local_deploying"
    LOCAL_COMPLETED = "local_completed"
    COMPLETED = "completed"
    FAILED = "failed"
    AWAITING_APPROVAL = "awaiting_approval"  # a rollout's first wave is done; an ADMIN approves the rest
    CANCELLED = "cancelled"


@dataclass
class RemoteEnvironmentConfig:
    """The original's fields; the platform's own (password, api_endpoint, ...) optional."""

    environment_id: str
    environment_type: RemoteEnvironmentType
    connection_method: str  # "ssh", "http_api", "webhook", "polling"
    host: str
    port: int
    username: str | None = None
    ssh_key_path: str | None = None
    api_token: str | None = field(default=None, repr=False)
    init_script_path: str = "./init_aicore.sh"
    health_check_url: str | None = None
    timeout: int = 300
    password: str | None = field(default=None, repr=False)
    api_endpoint: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    working_directory: str | None = None

    def as_api(self) -> dict[str, Any]:
        """The environment as the API takes it (fields left None take the platform's defaults)."""
        kind = self.environment_type
        kind = kind.value if isinstance(kind, RemoteEnvironmentType) else str(kind)
        values = {name: value for name, value in self.__dict__.items() if value is not None}
        values["environment_type"] = "docker" if kind == "docker_container" else kind
        return values


@dataclass
class CoordinationResult:
    coordination_id: str
    status: DeploymentCoordinationStatus
    ec2_deployment_result: dict[str, Any]
    local_deployment_results: dict[str, Any]
    start_time: datetime
    end_time: datetime | None
    total_duration: float | None
    logs: list[str]
    errors: list[str]
    record: dict[str, Any] = field(default_factory=dict, repr=False)  # the API's record


def ec2_request(config: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The trigger's `ec2`, `ec2_deployment_config` and `version` from an original
    `ec2_deployment_config`, and the keys it leaves unused."""
    config = dict(config or {})
    body: dict[str, Any] = {}
    ec2 = {"instance_id": config.pop("ec2_instance_id", ""), "public_ip": config.pop("public_ip", "")}
    if any(ec2.values()):
        body["ec2"] = {key: str(value) for key, value in ec2.items() if value}
    version = config.pop("version", None) or config.pop("deployment_version", None)
    if version:
        body["version"] = str(version)
    wanted = ["platform_health_url"]
    if "image_id" in config:
        wanted += list(EC2_LAUNCH_KEYS)
    elif "instance_id" in config:
        wanted.append("instance_id")
    stage = {key: config.pop(key) for key in wanted if key in config}
    if stage:
        body["ec2_deployment_config"] = stage
    return body, sorted(config)


def _past_ec2(record: dict[str, Any], local: dict[str, Any]) -> bool:
    """The EC2 stage is done: the run went on to the environments."""
    return record["status"] not in ("pending", "ec2_deploying", "failed") or any(
        result.get("attempts") for result in local.values()
    )


class RemoteDeploymentCoordinator:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        token_file: str | None = None,
        ca_bundle: str | None = None,
        client: Client | None = None,
    ) -> None:
        self.client = client or Client(load_config(url=url, token=token, token_file=token_file, ca_bundle=ca_bundle))
        self.remote_environments: dict[str, RemoteEnvironmentConfig] = {}

    def register_remote_environment(self, config: RemoteEnvironmentConfig) -> dict[str, Any]:
        """Create the environment on the platform, or replace it when it exists; the
        platform's record (secrets shown as *_set only)."""
        record = self.client.save_environment(config.as_api())
        self.remote_environments[config.environment_id] = config
        logger.info("registered remote environment %s (%s)", config.environment_id, record.get("environment_type"))
        return record

    async def coordinate_deployment(
        self,
        coordination_id: str,
        ec2_deployment_config: dict[str, Any] | None = None,
        target_environments: list[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> CoordinationResult:
        """Trigger a run of `target_environments` (None: every enabled environment) and
        wait for its end (or `timeout` seconds: the result then has its status so far)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self._coordinate, coordination_id, ec2_deployment_config, target_environments, timeout
        )

    def _coordinate(
        self, coordination_id: str, ec2_config: dict[str, Any] | None, targets: list[str] | None, timeout: Any
    ) -> CoordinationResult:
        body, unused = ec2_request(ec2_config)
        body["coordination_id"] = coordination_id
        if targets is not None:
            body["environments"] = list(targets)
        accepted = self.client.trigger_local(body)
        logs = []
        if unused:
            logs.append(
                f"ℹ️  ec2_deployment_config: {', '.join(unused)} not used: the deploy script deploys the EC2 "
                "platform; the platform's EC2 stage takes instance_id, image_id (a launch), platform_health_url"
            )
        follower = Follower(self.client, accepted["coordination_id"])
        logs.extend(line for kind, line in follower.follow(timeout=timeout) if kind == "log")
        record = follower.record or self.client.coordination(accepted["coordination_id"])
        return self._result(record, logs)

    def _result(self, record: dict[str, Any], logs: list[str]) -> CoordinationResult:
        coordination_id = record["coordination_id"]
        targets = self.client.pages(f"coordinations/{quote(coordination_id, safe='')}/environments/")
        local = {
            target["environment_id"]: {
                "success": target["status"] == "succeeded",
                **{key: target.get(key) for key in ("status", "reason", "exit_code", "error", "attempts")},
            }
            for target in targets
        }
        ended_badly = ("failed", "interrupted", "cancelled")
        errors = [
            f"{env} ({result['reason'] or result['status']}: {result['error']})"
            for env, result in local.items()
            if result["status"] in ended_badly
        ]
        if record.get("error"):
            errors.insert(0, record["error"])
        ec2 = record.get("ec2") or {}
        return CoordinationResult(
            coordination_id=coordination_id,
            status=DeploymentCoordinationStatus(record["status"]),
            ec2_deployment_result={"success": _past_ec2(record, local), **ec2},
            local_deployment_results=local,
            start_time=_time(record["created_at"]),
            end_time=_time(record["finished_at"]) if record.get("finished_at") else None,
            total_duration=duration(record),
            logs=logs,
            errors=errors,
            record=record,
        )

    def get_coordination_status(self, coordination_id: str) -> CoordinationResult | None:
        """The coordination as it is now, its stage log so far in `logs`; None if there is none."""
        try:
            record = self.client.coordination(coordination_id)
        except NotFoundError:
            return None
        run, logs, after = Run.of(record), [], 0
        while True:
            page = self.client.events(coordination_id, after=after)
            logs.extend(format_event(event, run) for event in page["events"])
            after = page["events"][-1]["id"] if page["events"] else after
            if not page["has_more"]:
                break
        if record.get("finished_at"):
            logs.append(format_total(record))
        return self._result(record, logs)

    def list_active_coordinations(self) -> list[str]:
        """The ids of the coordinations that have not ended (the oldest first; the
        platform's status lists the 10 oldest)."""
        return [record["coordination_id"] for record in self.client.status()["active"]]

    def get_coordination_history(self, limit: int = 10) -> list[CoordinationResult]:
        """The last `limit` finished coordinations, the oldest of them first (as the
        original's list); their `logs` are empty (get_coordination_status has them)."""
        return [self._result(record, []) for record in reversed(self.client.history(limit=limit))]
