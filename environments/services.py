"""Writes to environments: importing the config file, recording health."""

from django.db import transaction
from django.utils import timezone

from environments.config import ImportPlan, plan_import
from environments.models import Health, RemoteEnvironment, SettingsBlock


def environments_import(*, data: object, prune: bool = False, dry_run: bool = False) -> ImportPlan:
    """Validate a parsed config file and apply it all-or-nothing (upsert by
    environment_id; with `prune`, delete environments the file does not list).

    Raises ConfigError, having written nothing, when the file is invalid.
    """
    plan = plan_import(data, prune=prune)
    if dry_run:
        return plan
    with transaction.atomic():
        for name, values in plan.blocks.items():
            SettingsBlock.objects.update_or_create(name=name, defaults={"values": values})
        for environment in plan.create + plan.update:
            environment.save()
        if plan.delete:
            RemoteEnvironment.objects.filter(pk__in=[env.pk for env in plan.delete]).delete()
    return plan


def environment_record_health(*, environment_pk: int, healthy: bool, detail: str) -> None:
    RemoteEnvironment.objects.filter(pk=environment_pk).update(
        last_health=Health.HEALTHY if healthy else Health.UNHEALTHY,
        last_health_at=timezone.now(),
        last_health_detail=detail[:500],
    )
