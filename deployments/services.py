"""Writes to deployments: starting, running, cancelling and retrying coordinations."""

import hashlib
import ipaddress
import json
import secrets

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from deployments import patterns
from deployments.agent_runs import agent_runs_expire
from deployments.ec2.config import validate_ec2_config
from deployments.models import (
    TARGET_ACTIVE,
    TARGET_TERMINAL,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    Stage,
    StageEvent,
    TargetStatus,
    TriggerSource,
)
from deployments.queueing import queue_coordination
from deployments.selectors import environments_busy
from deployments.transitions import cancel_not_started, note, transition
from environments import rollout as rollouts
from environments.config import current_defaults, rollout_for
from environments.models import RemoteEnvironment
from environments.selectors import environments_for_deployment


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _new_coordination_id() -> str:
    while True:
        candidate = f"deploy_{timezone.now():%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"
        if not Coordination.objects.filter(coordination_id=candidate).exists():
            return candidate


def _validate_context(*, coordination_id: str, version: str, ec2_instance_id: str, ec2_public_ip: str) -> None:
    if coordination_id:
        if not patterns.matches(patterns.COORDINATION_ID, coordination_id):
            raise _invalid("coordination_id", patterns.COORDINATION_ID_HINT)
        if Coordination.objects.filter(coordination_id=coordination_id).exists():
            raise _invalid("coordination_id", f"a coordination {coordination_id!r} already exists")
    if version and not patterns.matches(patterns.VERSION, version):
        raise _invalid("version", patterns.VERSION_HINT)
    if ec2_instance_id and not patterns.matches(patterns.INSTANCE_ID, ec2_instance_id):
        raise _invalid("ec2_instance_id", patterns.INSTANCE_ID_HINT)
    if ec2_public_ip:
        try:
            ipaddress.ip_address(ec2_public_ip)
        except ValueError:
            raise _invalid("ec2_public_ip", f"{ec2_public_ip!r} is not an IP address") from None


class EnvironmentsBusy(Exception):
    """`concurrency: reject` and some environments are in another running coordination.
    `busy` maps each busy environment to the coordination holding it."""

    def __init__(self, busy: dict[str, str]):
        self.busy = busy
        listed = ", ".join(f"{environment_id} (in {holder})" for environment_id, holder in busy.items())
        super().__init__(f"environment(s) busy in another running coordination: {listed}")
        self.message = str(self)


def coordination_start(
    *,
    triggered_by: str,
    environment_ids: list[str] | None = None,
    tags: list[str] | None = None,
    exclude_tags: list[str] | None = None,
    rollout: dict | None = None,
    coordination_id: str = "",
    version: str = "",
    ec2_instance_id: str = "",
    ec2_public_ip: str = "",
    ec2_deployment_config: dict | None = None,
    user=None,
) -> Coordination:
    """Create a coordination over the given environments (default: every enabled one)
    and queue it for a worker once the transaction commits.

    `rollout` overrides the config file's rollout defaults key by key (environments.rollout).
    Targets are split into waves in the order of the environments. An environment that
    another running coordination holds: its target waits (`queue`), the start is refused
    with EnvironmentsBusy (`reject`), or the older run on it is cancelled (`supersede`).

    Raises ValidationError naming the field, having changed nothing, on bad input.
    """
    if triggered_by not in TriggerSource.values:
        raise _invalid("triggered_by", f"must be one of {', '.join(TriggerSource.values)}")
    if ec2_deployment_config is not None and not isinstance(ec2_deployment_config, dict):
        raise _invalid("ec2_deployment_config", "must be a JSON object")
    _validate_context(
        coordination_id=coordination_id, version=version, ec2_instance_id=ec2_instance_id, ec2_public_ip=ec2_public_ip
    )
    if ec2_deployment_config:
        validate_ec2_config(ec2_deployment_config, ec2_instance_id=ec2_instance_id)
    policy = rollout_for(rollout)
    environments = environments_for_deployment(environment_ids=environment_ids, tags=tags, exclude_tags=exclude_tags)
    with transaction.atomic():
        busy = _busy_environments(environments, policy)
        if busy and policy.concurrency == rollouts.REJECT:
            raise EnvironmentsBusy({environment_id: holder for environment_id, (holder, _) in busy.items()})
        plan = policy.resolved(len(environments))
        coordination = Coordination.objects.create(
            coordination_id=coordination_id or _new_coordination_id(),
            triggered_by=triggered_by,
            triggered_by_user=user,
            version=version,
            ec2_instance_id=ec2_instance_id,
            ec2_public_ip=ec2_public_ip,
            ec2_deployment_config=ec2_deployment_config or {},
            settings=current_defaults().as_json(),
            rollout=plan,
        )
        waves = [wave for wave, size in enumerate(plan["waves"], start=1) for _ in range(size)]
        CoordinationTarget.objects.bulk_create(
            CoordinationTarget(
                coordination=coordination, remote_environment=env, environment_id=env.environment_id, wave=wave
            )
            for env, wave in zip(environments, waves, strict=True)
        )
        StageEvent.objects.create(
            coordination=coordination,
            stage=Stage.COORDINATION,
            new_status=coordination.status,
            message=f"created by {triggered_by} for {len(environments)} environments"
            + (f" in {len(plan['waves'])} waves" if len(plan["waves"]) > 1 else ""),
            data={
                "environments": [env.environment_id for env in environments],
                "triggered_by": triggered_by,
                "rollout": plan,
            },
        )
        if busy and policy.concurrency == rollouts.SUPERSEDE:
            _supersede(coordination, busy)
        transaction.on_commit(
            lambda: queue_coordination(coordination_pk=coordination.pk, coordination_id=coordination.coordination_id)
        )
    return coordination


def _busy_environments(environments: list[RemoteEnvironment], policy: rollouts.Rollout) -> dict:
    """The environments another running coordination holds, when the policy acts on it.
    Their rows are locked first (PostgreSQL), so two starts over the same environments
    decide one after the other (SQLite's IMMEDIATE transactions already do)."""
    if policy.concurrency == rollouts.QUEUE:
        return {}
    pks = [env.pk for env in environments]
    list(RemoteEnvironment.objects.select_for_update().filter(pk__in=pks).order_by("pk").values_list("pk"))
    return environments_busy(pks)


def _supersede(coordination: Coordination, busy: dict) -> None:
    """`concurrency: supersede`: the older runs on these environments end. One not started
    yet is cancelled now; a running one is asked to stop (the worker holding it hangs up
    within a second and it ends cancelled); the new targets wait for it to end."""
    reason = f"superseded by {coordination.coordination_id}"
    holders = [target_pk for _, target_pks in busy.values() for target_pk in target_pks]
    # In the claims' lock order (environment, then target), so a claim racing this never deadlocks.
    older = list(
        CoordinationTarget.objects.filter(pk__in=holders)
        .select_related("coordination")
        .order_by("remote_environment_id", "pk")
    )
    cancel_not_started(
        [target for target in older if target.status == TargetStatus.PENDING],
        reason=reason,
        code="superseded",
        data={"superseded_by": coordination.coordination_id},
    )
    for target in older:
        # Whatever was read above: one its coordinator claimed meanwhile (the cancel found
        # it started) is asked to stop all the same.
        if CoordinationTarget.objects.filter(pk=target.pk, status__in=TARGET_ACTIVE).update(stop_requested=reason):
            note(
                target.coordination,
                f"{reason}: hanging up the run",
                stage=Stage.RUN,
                target=target,
                data={"superseded_by": coordination.coordination_id},
            )
    # No worker hangs up a polling agent's run: it ends here, and the agent hears it.
    agent_runs_expire(targets=CoordinationTarget.objects.filter(pk__in=holders))
    _close_emptied_approvals({target.coordination for target in older}, reason=reason)


def _close_emptied_approvals(coordinations: set[Coordination], *, reason: str) -> None:
    """An older rollout parked for approval whose every remaining environment was just
    superseded has nothing left to approve: it ends `cancelled` now (no worker holds a
    parked coordination, so nobody else would close it)."""
    for older in coordinations:
        if older.status == C.AWAITING_APPROVAL and not older.targets.exclude(status__in=TARGET_TERMINAL).exists():
            transition(older, C.CANCELLED, message=f"{reason}: nothing left to approve", fields={"error": reason})


# --- Cancel, retry, idempotent start (the API's actions) ------------------------------------


class CoordinationConflict(Exception):
    """The coordination's status does not allow the action: it has already ended (cancel),
    or it has not ended yet (retry). `status` is the status it has."""

    def __init__(self, message: str, *, status: str):
        super().__init__(message)
        self.message = message
        self.status = status


class IdempotencyKeyReused(Exception):
    """An idempotency key came back with a different request, or from another user."""


RETRYABLE_TARGET_STATUSES = (TargetStatus.FAILED, TargetStatus.CANCELLED, TargetStatus.INTERRUPTED)
# How often cancel re-reads a status the coordinator moved on between the read and the
# conditional update, before it gives up.
CANCEL_ATTEMPTS = 10


def _actor(user, actor: str) -> str:
    """Who did it, for events and messages: the signed-in user's name, else what the
    caller says (a command names the machine account running it)."""
    if user is not None and user.is_authenticated:
        return user.get_username()
    return actor or "an unknown user"


def coordination_cancel(*, coordination: Coordination, user=None, actor: str = "") -> Coordination:
    """Cancel a coordination that has not ended.

    1. Move it to `cancelled` (a conditional update: if the coordinator moved it on
       meanwhile, re-read and try again).
    2. In the same transaction, cancel every target that has not started.
    3. The coordinator running it re-reads its status every second and hangs up the
       targets still running; they end `cancelled`.

    Raises CoordinationConflict, changing nothing, when it has already ended.
    """
    who = _actor(user, actor)
    reason = f"cancelled by {who}"
    for _ in range(CANCEL_ATTEMPTS):
        coordination.refresh_from_db(fields=["status"])
        if coordination.is_terminal:
            raise CoordinationConflict(
                f"coordination {coordination.coordination_id} has already ended: it is {coordination.status}",
                status=coordination.status,
            )
        with transaction.atomic():
            if not transition(
                coordination, C.CANCELLED, message=reason, data={"cancelled_by": who}, fields={"error": reason}
            ):
                continue
            cancel_not_started(coordination.targets.filter(status=TargetStatus.PENDING), reason=reason)
            # Runs polling agents hold end now; each agent hears it on its next heartbeat.
            agent_runs_expire(targets=coordination.targets.all())
        return coordination
    raise CoordinationConflict(
        f"coordination {coordination.coordination_id} kept changing status; try again", status=coordination.status
    )


def coordination_approve(*, coordination: Coordination, user=None, actor: str = "") -> Coordination:
    """Approve the rest of a rollout that awaits approval after its first wave: it moves
    back to `local_deploying` (a conditional update: of two approvals, or an approval and
    a cancel, one wins) and a worker is queued to open the next wave.

    Raises CoordinationConflict, changing nothing, when it is not awaiting approval."""
    who = _actor(user, actor)
    coordination.refresh_from_db(fields=["status"])
    with transaction.atomic():
        if coordination.status != C.AWAITING_APPROVAL or not transition(
            coordination,
            C.LOCAL_DEPLOYING,
            message=f"approved by {who}: the rollout goes on",
            data={"approved_by": who},
            fields={
                "approved_at": timezone.now(),
                "approved_by": user if user is not None and user.pk else None,
                "approver": who[:200],
            },
        ):
            coordination.refresh_from_db(fields=["status"])
            raise CoordinationConflict(
                f"coordination {coordination.coordination_id} is {coordination.status}, not awaiting approval",
                status=coordination.status,
            )
        transaction.on_commit(
            lambda: queue_coordination(coordination_pk=coordination.pk, coordination_id=coordination.coordination_id)
        )
    return coordination


def coordination_retry(*, coordination: Coordination, user=None, triggered_by: str = TriggerSource.API) -> Coordination:
    """Start a new coordination over the environments of an ended one that failed, were
    cancelled or were interrupted and still exist, with the same version and EC2 details,
    linked to it by `retry_of`.

    Raises CoordinationConflict while it is still running, and ValidationError (field
    `environments`) when there is nothing to retry or a target can no longer be triggered.
    """
    coordination.refresh_from_db(fields=["status"])
    if not coordination.is_terminal:
        raise CoordinationConflict(
            f"coordination {coordination.coordination_id} is still {coordination.status}: "
            "retry it once it has ended, or cancel it first",
            status=coordination.status,
        )
    candidates = list(
        coordination.targets.filter(status__in=RETRYABLE_TARGET_STATUSES)
        .order_by("environment_id")
        .values_list("environment_id", flat=True)
    )
    existing = set(
        RemoteEnvironment.objects.filter(environment_id__in=candidates).values_list("environment_id", flat=True)
    )
    environment_ids = [environment_id for environment_id in candidates if environment_id in existing]
    if not environment_ids:
        raise _invalid(
            "environments",
            f"nothing to retry: no environment of {coordination.coordination_id} that failed, "
            "was cancelled or was interrupted still exists",
        )
    with transaction.atomic():
        retry = coordination_start(
            triggered_by=triggered_by,
            environment_ids=environment_ids,
            # The same rollout policy (resolved again against the environments retried).
            rollout={key: value for key, value in (coordination.rollout or {}).items() if key in rollouts.KEYS},
            version=coordination.version,
            ec2_instance_id=coordination.ec2_instance_id,
            ec2_public_ip=coordination.ec2_public_ip,
            ec2_deployment_config=coordination.ec2_deployment_config,
            user=user,
        )
        Coordination.objects.filter(pk=retry.pk).update(retry_of=coordination)
        retry.retry_of = coordination
        note(
            retry,
            f"retry of {coordination.coordination_id} for {len(environment_ids)} environments",
            stage=Stage.COORDINATION,
            data={"retry_of": coordination.coordination_id, "environments": environment_ids},
        )
    return retry


def _request_fingerprint(arguments: dict) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()


def _idempotent_replay(idempotency_key: str, user, fingerprint: str) -> Coordination | None:
    original = Coordination.objects.filter(idempotency_key=idempotency_key).first()
    if original is None:
        return None
    if original.triggered_by_user_id != getattr(user, "pk", None):
        raise IdempotencyKeyReused("this Idempotency-Key was already used by another user")
    if original.idempotency_fingerprint != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    return original


def coordination_start_once(*, idempotency_key: str, user=None, **arguments) -> tuple[Coordination, bool]:
    """`coordination_start` at most once per idempotency key. Returns (coordination, created).

    1. A key already stored for the same user and request returns its coordination.
    2. Otherwise start one and store the key with it, in one transaction.
    3. A concurrent request with the same key that committed first makes step 2 fail on
       the unique constraint (or on its coordination_id): its coordination is returned.

    Raises IdempotencyKeyReused when the key was used by another user or for a different
    request, and ValidationError on bad input, as coordination_start does.
    """
    if not idempotency_key:
        return coordination_start(user=user, **arguments), True
    fingerprint = _request_fingerprint(arguments)
    original = _idempotent_replay(idempotency_key, user, fingerprint)
    if original is not None:
        return original, False
    try:
        with transaction.atomic():
            coordination = coordination_start(user=user, **arguments)
            Coordination.objects.filter(pk=coordination.pk).update(
                idempotency_key=idempotency_key, idempotency_fingerprint=fingerprint
            )
    except (IntegrityError, ValidationError):
        original = _idempotent_replay(idempotency_key, user, fingerprint)
        if original is None:
            raise
        return original, False
    coordination.idempotency_key = idempotency_key
    coordination.idempotency_fingerprint = fingerprint
    return coordination, True
