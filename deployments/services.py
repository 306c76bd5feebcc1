"""Writes to deployments: starting and running coordinations."""

import ipaddress
import re
import secrets

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from deployments.coordinator import run_coordination
from deployments.models import Coordination, CoordinationTarget, Stage, StageEvent, TriggerSource
from environments.config import current_defaults
from environments.connectors import CONNECTORS
from environments.models import RemoteEnvironment

COORDINATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:-]{0,99}$")
INSTANCE_ID_PATTERN = re.compile(r"^i-[0-9a-f]{8,17}$")


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _new_coordination_id() -> str:
    while True:
        candidate = f"deploy_{timezone.now():%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"
        if not Coordination.objects.filter(coordination_id=candidate).exists():
            return candidate


def _validate_context(*, coordination_id: str, version: str, ec2_instance_id: str, ec2_public_ip: str) -> None:
    if coordination_id:
        if not COORDINATION_ID_PATTERN.match(coordination_id):
            raise _invalid("coordination_id", "use 1-100 letters, digits, '_', '.', ':' or '-'")
        if Coordination.objects.filter(coordination_id=coordination_id).exists():
            raise _invalid("coordination_id", f"a coordination {coordination_id!r} already exists")
    if version and not VERSION_PATTERN.match(version):
        raise _invalid("version", "use 1-100 letters, digits, '_', '.', '+', ':' or '-'")
    if ec2_instance_id and not INSTANCE_ID_PATTERN.match(ec2_instance_id):
        raise _invalid("ec2_instance_id", "an EC2 instance id looks like i-0123456789abcdef0")
    if ec2_public_ip:
        try:
            ipaddress.ip_address(ec2_public_ip)
        except ValueError:
            raise _invalid("ec2_public_ip", f"{ec2_public_ip!r} is not an IP address") from None


def _select_environments(environment_ids: list[str] | None) -> list[RemoteEnvironment]:
    if environment_ids is None:
        environments = [
            env for env in RemoteEnvironment.objects.filter(enabled=True) if env.connection_method in CONNECTORS
        ]
        if not environments:
            raise _invalid("environments", "there is no enabled environment to deploy to")
        return environments
    if not environment_ids:
        raise _invalid("environments", "name at least one environment")
    wanted = list(dict.fromkeys(environment_ids))
    found = {env.environment_id: env for env in RemoteEnvironment.objects.filter(environment_id__in=wanted)}
    unknown = [env_id for env_id in wanted if env_id not in found]
    if unknown:
        raise _invalid("environments", f"unknown environment(s): {', '.join(unknown)}")
    disabled = [env_id for env_id in wanted if not found[env_id].enabled]
    if disabled:
        raise _invalid("environments", f"disabled environment(s): {', '.join(disabled)}")
    unsupported = [env_id for env_id in wanted if found[env_id].connection_method not in CONNECTORS]
    if unsupported:
        raise _invalid("environments", f"connection method not supported yet for: {', '.join(unsupported)}")
    return [found[env_id] for env_id in wanted]


def coordination_start(
    *,
    triggered_by: str,
    environment_ids: list[str] | None = None,
    coordination_id: str = "",
    version: str = "",
    ec2_instance_id: str = "",
    ec2_public_ip: str = "",
    ec2_deployment_config: dict | None = None,
    user=None,
) -> Coordination:
    """Create a coordination over the given environments (default: every enabled one)
    and queue it for a worker once the transaction commits.

    Raises ValidationError naming the field, having changed nothing, on bad input.
    """
    if triggered_by not in TriggerSource.values:
        raise _invalid("triggered_by", f"must be one of {', '.join(TriggerSource.values)}")
    if ec2_deployment_config is not None and not isinstance(ec2_deployment_config, dict):
        raise _invalid("ec2_deployment_config", "must be a JSON object")
    _validate_context(
        coordination_id=coordination_id, version=version, ec2_instance_id=ec2_instance_id, ec2_public_ip=ec2_public_ip
    )
    environments = _select_environments(environment_ids)
    with transaction.atomic():
        coordination = Coordination.objects.create(
            coordination_id=coordination_id or _new_coordination_id(),
            triggered_by=triggered_by,
            triggered_by_user=user,
            version=version,
            ec2_instance_id=ec2_instance_id,
            ec2_public_ip=ec2_public_ip,
            ec2_deployment_config=ec2_deployment_config or {},
            settings=current_defaults().as_json(),
        )
        CoordinationTarget.objects.bulk_create(
            CoordinationTarget(coordination=coordination, remote_environment=env, environment_id=env.environment_id)
            for env in environments
        )
        StageEvent.objects.create(
            coordination=coordination,
            stage=Stage.COORDINATION,
            new_status=coordination.status,
            message=f"created by {triggered_by} for {len(environments)} environments",
            data={"environments": [env.environment_id for env in environments], "triggered_by": triggered_by},
        )
        transaction.on_commit(lambda: _enqueue(coordination))
    return coordination


def _enqueue(coordination: Coordination) -> None:
    from django.conf import settings

    async_task(
        "deployments.tasks.run_coordination",
        coordination.pk,
        q_options={
            "task_name": f"coordination {coordination.coordination_id}",
            "group": "coordinations",
            "timeout": settings.Q_TIMEOUT,
        },
    )


def coordination_run(*, coordination_pk: int) -> None:
    """Run a coordination to its end in this process (called by the worker task). Safe
    to call twice: a finished coordination is left alone, a claimed one is not re-run."""
    coordination = Coordination.objects.filter(pk=coordination_pk).first()
    if coordination is None:
        return
    run_coordination(coordination)
