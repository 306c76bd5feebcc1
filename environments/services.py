"""Writes to environments: importing the config file, checking and recording health."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from environments.config import ImportPlan, apply_entry, current_defaults, health_check_minutes, plan_import
from environments.connectors import ConnectorError, DeploymentContext, Target, connector_for
from environments.health import check_health
from environments.models import (
    SECRET_FIELDS,
    Health,
    HealthChange,
    RemoteEnvironment,
    SettingsBlock,
    validate_host_key,
)

CHECK_THREADS = 64
HEALTH_SCHEDULE_NAME = "environment health checks"


def health_schedule_sync() -> None:
    """The scheduled health checks run every health_check_minutes() minutes."""
    minutes = health_check_minutes()
    schedule, created = Schedule.objects.get_or_create(
        name=HEALTH_SCHEDULE_NAME,
        defaults={
            "func": "environments.tasks.check_environments_health",
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
            "next_run": timezone.now() + timedelta(minutes=minutes),
        },
    )
    if not created and schedule.minutes != minutes:
        schedule.minutes = minutes
        schedule.save(update_fields=["minutes"])


def environments_import(*, data: object, prune: bool = False, dry_run: bool = False, user=None) -> ImportPlan:
    """Validate a parsed config file and apply it all-or-nothing (upsert by
    environment_id; with `prune`, delete environments the file does not list). A host
    key the file brings in is approved by `user` (None: a command) now; each environment
    saves only the fields the file changes.

    Raises ConfigError, having written nothing, when the file is invalid.
    """
    plan = plan_import(data, prune=prune)
    if dry_run:
        return plan
    with transaction.atomic():
        for name, values in plan.blocks.items():
            SettingsBlock.objects.update_or_create(name=name, defaults={"values": values})
        for environment in plan.create + plan.update:
            environment_save(environment=environment, user=user)
        if plan.delete:
            RemoteEnvironment.objects.filter(pk__in=[env.pk for env in plan.delete]).delete()
        health_schedule_sync()  # the file may set default_settings.health_check_interval
    return plan


def environment_prepare(
    *, data: dict, current: RemoteEnvironment | None = None, partial: bool = False
) -> RemoteEnvironment:
    """The environment an API write would save, validated by the config file's rules;
    writes nothing. A new one takes the file's defaults for what `data` leaves out; a full
    update is like an imported entry (secrets, `enabled` and `host_key` kept when absent);
    a partial update changes only what it names. A stored secret is never sent to a new
    address: a change of where it goes (RemoteEnvironment.retargeted_secrets) must give it
    again. Raises ValidationError naming fields."""
    if current is None:
        environment = RemoteEnvironment()
        apply_entry(environment, data, current_defaults(), creating=True)
    else:
        if data.get("environment_id", current.environment_id) != current.environment_id:
            raise ValidationError(
                {"environment_id": ["cannot be changed: create a new environment and delete this one"]}
            )
        environment = RemoteEnvironment.objects.get(pk=current.pk)
        if partial:
            for name, value in data.items():
                if name in SECRET_FIELDS:
                    environment.give_secret(name, value)
                else:
                    setattr(environment, name, value)
        else:
            apply_entry(environment, {**data, "environment_id": current.environment_id}, current_defaults(), False)
    # Uniqueness is the caller's field validation; the rest is the model's.
    environment.full_clean(validate_unique=False, validate_constraints=False)
    return environment


def _stamp_host_key_approval(environment: RemoteEnvironment, user) -> None:
    """A host key written (admin, API, import) is approved by whoever wrote it, now; a
    cleared key clears the approval. Unchanged, the approval stays as it was."""
    if "host_key" not in environment.changed_fields():
        return
    environment.host_key_approved_by = user if environment.host_key else None
    environment.host_key_approved_at = timezone.now() if environment.host_key else None


def environment_save(*, environment: RemoteEnvironment, user=None) -> RemoteEnvironment:
    """Save a new environment, or only what changed on an existing one since it was read,
    so a health result or a host key approval recorded meanwhile is not written over. A
    changed host key is stamped approved by `user` (None when unknown) now."""
    environment.host_key = " ".join(environment.host_key.split()[:2])  # a key's comment is not the key
    _stamp_host_key_approval(environment, user)
    if environment._state.adding:
        environment.save()
        return environment
    changed = environment.changed_fields()
    if not changed:
        return environment
    try:
        with transaction.atomic():  # a savepoint: the error below must not spoil the caller's transaction
            environment.save(update_fields=[*changed, "updated_at"])
    except DatabaseError:
        if RemoteEnvironment.objects.filter(pk=environment.pk).exists():
            raise
        raise ValidationError(
            {"environment_id": [f"{environment.environment_id!r} was deleted meanwhile; nothing was saved"]}
        ) from None
    return environment


def environment_record_health(
    *, environment_pk: int, healthy: bool, detail: str, latency_ms: int | None = None
) -> None:
    """Keep the last result on the environment; a flip is also kept as a HealthChange."""
    new = Health.HEALTHY if healthy else Health.UNHEALTHY
    now = timezone.now()
    with transaction.atomic():
        old = RemoteEnvironment.objects.filter(pk=environment_pk).values_list("last_health", flat=True).first()
        if old is None:
            return  # deleted meanwhile
        changes = {
            "last_health": new,
            "last_health_at": now,
            "last_health_detail": detail[:500],
            "last_health_latency_ms": latency_ms,
        }
        if old != new:
            changes["last_health_changed_at"] = now
            HealthChange.objects.create(
                environment_id=environment_pk, old_health=old, new_health=new, detail=detail[:500], created_at=now
            )
        RemoteEnvironment.objects.filter(pk=environment_pk).update(**changes)


@dataclass
class CheckReport:
    """One environment's answer to a health check or a connectivity preflight."""

    environment_id: str
    ok: bool | None  # None: nothing to check (no health_check_url)
    detail: str
    latency_ms: int | None = None
    data: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "environment_id": self.environment_id,
            "ok": self.ok,
            "detail": self.detail,
            "latency_ms": self.latency_ms,
            **({"data": self.data} if self.data else {}),
        }


def _health_report(environment: RemoteEnvironment, defaults) -> CheckReport:
    if not environment.health_check_url:
        return CheckReport(environment.environment_id, None, "no health_check_url")
    result = check_health(
        environment.health_check_url,
        timeout=defaults.health_check_timeout,
        retries=defaults.health_check_retries,
        retry_delay=defaults.retry_delay,
        ca_bundle=settings.HTTP_CA_BUNDLE,
    )
    return CheckReport(environment.environment_id, result.healthy, result.detail, result.latency_ms)


def _connectivity_report(environment: RemoteEnvironment, defaults) -> CheckReport:
    spec = Target.of(environment)
    context = DeploymentContext(
        coordination_id="preflight",
        connect_timeout=defaults.connect_timeout,
        known_hosts_path=settings.SSH_KNOWN_HOSTS,
        ca_bundle=settings.HTTP_CA_BUNDLE,
    )
    try:
        detail = connector_for(environment.connection_method).check(spec, context)
    except ConnectorError as exc:
        return CheckReport(environment.environment_id, False, f"{exc.reason}: {exc.message}", data=exc.data)
    return CheckReport(environment.environment_id, True, detail)


def environments_check(*, environments: list[RemoteEnvironment], connectivity: bool = False) -> list[CheckReport]:
    """Health-check (or, with `connectivity`, preflight) the environments in parallel.
    Health results are recorded on each environment; a preflight records nothing and
    runs nothing on the target."""
    defaults = current_defaults()
    if connectivity and any(environment.get_deferred_fields() for environment in environments):
        # A preflight authenticates: load the secrets here, not lazily in each thread.
        loaded = RemoteEnvironment.objects.in_bulk([environment.pk for environment in environments])
        environments = [loaded[environment.pk] for environment in environments if environment.pk in loaded]
    check = _connectivity_report if connectivity else _health_report
    with ThreadPoolExecutor(max_workers=max(1, min(CHECK_THREADS, len(environments)))) as pool:
        reports = list(pool.map(lambda environment: check(environment, defaults), environments))
    if not connectivity:
        for environment, report in zip(environments, reports, strict=True):
            if report.ok is not None:
                environment_record_health(
                    environment_pk=environment.pk, healthy=report.ok, detail=report.detail, latency_ms=report.latency_ms
                )
    return reports


# --- The admin's writes -------------------------------------------------------------------

# django-q2 group of the checks the admin queues; their results are read back from it.
CHECK_TASK_GROUP = "environment checks"


def environment_pin_host_key(*, environment: RemoteEnvironment, key: str, user) -> RemoteEnvironment:
    """Pin `key` ('<type> <base64>', a comment is dropped) as the environment's SSH host
    key, recording who approved it and when; an empty `key` unpins it (host keys are then
    verified against SSH_KNOWN_HOSTS again). Raises ValidationError (field `host_key`) on
    a malformed key, having changed nothing."""
    key = " ".join(key.split()[:2])
    if key:
        try:
            validate_host_key(key)
        except ValidationError as exc:
            raise ValidationError({"host_key": exc.messages}) from None
    environment.host_key = key
    return environment_save(environment=environment, user=user)


def environment_set_agent_token(*, environment: RemoteEnvironment, token: str) -> RemoteEnvironment:
    """Replace the polling agent's token (with "" clear it). Only its hash is stored, so the
    previous token stops being accepted at once (an agent still using it gets 401). Raises
    ValidationError (field `agent_token`, never quoting the value) having changed nothing."""
    stored = environment.agent_token_hash
    environment.agent_token = token
    errors = environment._agent_token_errors()  # the model's rule: the token's shape, one environment each
    if errors:
        environment.agent_token_hash = stored
        raise ValidationError({name: [problem] for name, problem in errors.items()})
    return environment_save(environment=environment)


def environments_delete(*, environments: list[RemoteEnvironment]) -> int:
    """Delete environments. Past coordinations keep their outcomes (the targets keep the
    environment's id); their health history goes with them."""
    deleted, _ = RemoteEnvironment.objects.filter(pk__in=[env.pk for env in environments]).delete()
    return deleted


def environments_check_queue(*, environments: list[RemoteEnvironment], connectivity: bool = False) -> int:
    """Queue a health check (or a connectivity preflight) of the environments for a
    worker, after commit: checks never run inside a web request. The task's result (the
    reports) is kept by django-q2 in group CHECK_TASK_GROUP. Returns how many are queued."""
    pks = [environment.pk for environment in environments]
    if not pks:
        return 0
    what = "connectivity preflight" if connectivity else "health check"
    transaction.on_commit(
        lambda: async_task(
            "environments.tasks.check_environments_now",
            pks,
            connectivity,
            q_options={"group": CHECK_TASK_GROUP, "task_name": f"{what} of {len(pks)} environments"},
        )
    )
    return len(pks)
