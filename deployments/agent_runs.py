"""Runs held by polling agents (`connection_method = "polling"`).

No worker connects to a polling machine: the coordinator offers the run in the database,
the machine's agent takes it with its next poll and reports output, heartbeats and the exit
code over /api/agent/. So the run lives in the database only, and no worker's life matters
to it: a worker killed meanwhile changes nothing, a new lead just waits for it, and its end
is recorded when the agent says so. Overdue runs are ended by `agent_runs_expire`, which
every lead that waits for them, a cancel, and the reaper call:

- offered and not taken within the environment's timeout: failed, `agent_offline`;
- taken, and the agent silent for AGENT_HEARTBEAT_TIMEOUT_SECONDS: failed, `agent_lost`;
- taken longer ago than the environment's timeout: failed, `timeout`;
- its coordination ended (a cancel): cancelled; a newer coordination superseded it:
  cancelled, `superseded`.
The agent learns of each on its next heartbeat (`stop`) and kills the script.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from deployments.models import COORDINATION_TERMINAL, TARGET_TERMINAL, CoordinationTarget, Stage, TargetStatus as T
from deployments.script_output import OUTPUT_COLUMNS, environment_secrets, output_append
from deployments.transitions import note, transition
from environments import agent_tokens, bounds
from environments.connectors import DeploymentContext, Target
from environments.connectors.polling import last_seen
from environments.models import ConnectionMethod, RemoteEnvironment

AGENT_LOST = "agent_lost"
AGENT_OFFLINE = "agent_offline"
# The most output one request may carry (UTF-8 bytes of its text).
OUTPUT_CHUNK_BYTES = 64 * 1024
# An environment's last-seen time is written when older than this many poll intervals:
# an idle poll writes nothing most of the time, and a preflight (seen within 3 intervals)
# still sees an agent that polls on time.
SEEN_WRITE_INTERVALS = 1.5

ACTIVE = (T.TRIGGERING, T.RUNNING)


def held_by_agent() -> Q:
    """The targets whose run a polling agent holds (no worker's lease does)."""
    return Q(agent_offered_at__isnull=False)


def agent_run_offer(target: CoordinationTarget, environment: RemoteEnvironment) -> bool:
    """Offer the target's run to its environment's agent (pending → triggering). Like a
    worker's claim, one coordination at a time gets the machine (the one-run constraint)."""
    return transition(
        target,
        T.TRIGGERING,
        stage=Stage.TRIGGER,
        message=f"offered to the polling agent ({last_seen(environment.agent_seen_at)})",
        data={"attempt": 1, "wave": target.wave, "connection_method": ConnectionMethod.POLLING},
        fields={"attempts": 1, "lease": None, "waiting_for": "", "agent_offered_at": timezone.now()},
    )


@dataclass(frozen=True)
class Poll:
    """What one agent poll found."""

    environment_pk: int
    environment_id: str
    connection_method: str
    poll_interval: int
    offered_target_pk: int | None


def agent_poll_lookup(token: str) -> Poll | None:
    """The environment whose agent token this is, and a run offered to it: one indexed
    query (the token's hash, then the offered-runs index). None: no environment has it."""
    offered = (
        CoordinationTarget.objects.filter(remote_environment=OuterRef("pk"), status=T.TRIGGERING)
        .filter(held_by_agent())
        .order_by("pk")
        .values("pk")[:1]
    )
    row = (
        RemoteEnvironment.objects.filter(agent_token_hash=agent_tokens.token_hash(token))
        .annotate(offered=Subquery(offered))
        .values("pk", "environment_id", "connection_method", "poll_interval", "agent_seen_at", "offered")
        .first()
    )
    if row is None or not token:
        return None
    _note_seen(row["pk"], row["agent_seen_at"], row["poll_interval"])
    return Poll(row["pk"], row["environment_id"], row["connection_method"], row["poll_interval"], row["offered"])


def _note_seen(environment_pk: int, seen_at, poll_interval: int) -> None:
    now = timezone.now()
    interval = bounds.POLL_INTERVAL.clamp_int(poll_interval)
    if seen_at is None or (now - seen_at).total_seconds() >= SEEN_WRITE_INTERVALS * interval:
        RemoteEnvironment.objects.filter(pk=environment_pk).update(agent_seen_at=now)


def agent_run_claim(target_pk: int, *, agent: str) -> CoordinationTarget | None:
    """The poll's agent takes the offered run (triggering → running, a conditional update:
    of two agents polling with one token, one gets it). None: someone else got it first,
    or it ended meanwhile."""
    target = (
        CoordinationTarget.objects.select_related("coordination", "remote_environment")
        .filter(pk=target_pk, status=T.TRIGGERING)
        .filter(held_by_agent())
        .first()
    )
    if target is None or target.coordination.status in COORDINATION_TERMINAL:
        return None
    now = timezone.now()
    run_id = "run_" + secrets.token_urlsafe(24)
    if not transition(
        target,
        T.RUNNING,
        stage=Stage.RUN,
        message=f"the polling agent took the run{f' ({agent})' if agent else ''}: the script starts",
        fields={"agent_run_id": run_id, "agent_claimed_at": now, "agent_seen_at": now},
    ):
        return None
    return target


def run_description(target: CoordinationTarget) -> dict:
    """What the agent needs to start the script (the poll's answer)."""
    coordination, environment = target.coordination, target.remote_environment
    assert environment is not None, "a claimed run's environment answered the poll"
    spec = Target.of(environment)
    context = DeploymentContext(
        coordination_id=coordination.coordination_id,
        ec2_instance_id=coordination.ec2_instance_id,
        ec2_public_ip=coordination.ec2_public_ip,
        deployment_version=coordination.version,
    )
    return {
        "run_id": target.agent_run_id,
        "coordination_id": coordination.coordination_id,
        "environment_id": target.environment_id,
        "script_path": spec.init_script_path,
        "working_directory": spec.working_directory,
        "timeout": spec.timeout,
        "heartbeat_interval": heartbeat_interval(spec.poll_interval),
        "environment": context.script_environment(spec),
    }


def heartbeat_interval(poll_interval: int) -> int:
    """Often enough that two lost heartbeats in a row do not lose the run."""
    return max(1, min(bounds.POLL_INTERVAL.clamp_int(poll_interval), settings.AGENT_HEARTBEAT_TIMEOUT_SECONDS // 4))


def agent_run_for(token: str, run_id: str) -> tuple[bool, CoordinationTarget | None]:
    """(is the token an agent's, the run it may report on). A run of another environment
    is as unknown as a run that does not exist."""
    environment_pk = (
        RemoteEnvironment.objects.filter(agent_token_hash=agent_tokens.token_hash(token))
        .values_list("pk", flat=True)
        .first()
    )
    if environment_pk is None or not token:
        return False, None
    target = (
        CoordinationTarget.objects.select_related("coordination")
        .filter(agent_run_id=run_id, remote_environment_id=environment_pk)
        .exclude(agent_run_id="")
        .first()
    )
    return True, target


class OffsetAhead(Exception):
    """The agent sent output (or its result) past what the platform holds: it must resend
    from `held`."""

    def __init__(self, held: int):
        super().__init__(f"the platform holds {held} bytes of output: send from there")
        self.held = held


def agent_run_output(target: CoordinationTarget, *, offset: int, text: str, agent_token: str = "") -> int:
    """Keep output the agent sent, each byte once: `offset` is how many bytes it had sent
    before `text`. A resent overlap is skipped; a gap raises OffsetAhead. Output after the
    run ended (the script's last lines after a cancel) is kept too. Returns the bytes held.
    `agent_token` (the request's) is masked in the output like the environment's secrets."""
    data = text.encode("utf-8")
    secrets = environment_secrets(target.remote_environment, agent_token)
    while True:
        held = target.output_bytes
        if offset > held:
            raise OffsetAhead(held)
        skip = held - offset
        changes: dict = {"agent_seen_at": timezone.now()}
        if skip < len(data):
            changes["output_bytes"] = offset + len(data)
        with transaction.atomic():
            # Conditional on what was read: of two requests at once, each adds its part
            # once, and the first holds the row until its output is appended.
            if CoordinationTarget.objects.filter(pk=target.pk, output_bytes=held).update(**changes):
                for name, value in changes.items():
                    setattr(target, name, value)
                if skip < len(data):
                    received = data[skip:].decode("utf-8", errors="replace")
                    appended = output_append(target, received, secrets=secrets)
                    CoordinationTarget.objects.filter(pk=target.pk).update(**appended)
                return target.output_bytes
        target.refresh_from_db(fields=["output_bytes", *OUTPUT_COLUMNS, "status"])


def agent_run_heartbeat(target: CoordinationTarget) -> None:
    """The agent is alive; a run past its time ends now (the answer tells the agent)."""
    now = timezone.now()
    CoordinationTarget.objects.filter(pk=target.pk).update(agent_seen_at=now)
    target.agent_seen_at = now
    agent_runs_expire(targets=CoordinationTarget.objects.filter(pk=target.pk))
    target.refresh_from_db(fields=["status", "reason", "error", "stop_requested"])


def stop_reason(target: CoordinationTarget) -> str:
    """Why the agent must stop the script ('' while the run goes on)."""
    if target.status == T.RUNNING and not target.stop_requested:
        return ""
    if target.status == T.RUNNING:
        return target.stop_requested
    return f"{target.status}: {target.error or target.reason or 'the run has ended'}"


def agent_run_finish(target: CoordinationTarget, *, exit_code: int, offset: int) -> bool:
    """The agent's report of the script's end. Only after all its output is held
    (OffsetAhead otherwise). Returns False when the run had already ended (a cancel, a
    timeout): the exit code is then kept as a note, the outcome stays."""
    if offset > target.output_bytes:
        raise OffsetAhead(target.output_bytes)
    if target.output_held:  # the output has ended: what waited for a secret's end is stored
        CoordinationTarget.objects.filter(pk=target.pk).update(**output_append(target, "", secrets=(), final=True))
    if target.status != T.RUNNING:
        note(
            target.coordination,
            f"the polling agent reports the script exited with {exit_code} (the run had already ended: "
            f"{target.status})",
            stage=Stage.RUN,
            target=target,
            data={"exit_code": exit_code},
        )
        return False
    succeeded = exit_code == 0
    message = f"script exited with {exit_code} (reported by the polling agent)"
    moved = transition(
        target,
        T.SUCCEEDED if succeeded else T.FAILED,
        stage=Stage.RUN,
        message=message,
        data={"exit_code": exit_code, "reason": "" if succeeded else "exit_code"},
        fields={
            "exit_code": exit_code,
            "reason": "" if succeeded else "exit_code",
            "error": "" if succeeded else f"script exited with {exit_code}",
            "agent_seen_at": timezone.now(),
        },
    )
    if not moved:  # ended meanwhile (a cancel at the same moment)
        target.refresh_from_db()
        return agent_run_finish(target, exit_code=exit_code, offset=offset)
    return True


def _verdict(target: CoordinationTarget, now) -> tuple[str, str, str] | None:
    """(status, reason, message) for a run that must end now, or None."""
    coordination = target.coordination
    if coordination.status in COORDINATION_TERMINAL:
        return T.CANCELLED, "cancelled", coordination.error or f"its coordination is {coordination.status}"
    if target.stop_requested:
        return T.CANCELLED, "superseded", target.stop_requested
    environment = target.remote_environment
    if environment is None:  # its agent can no longer authenticate: nothing would end it
        return T.FAILED, "environment_deleted", "the environment was deleted while its polling agent held the run"
    timeout = bounds.TIMEOUT.clamp_int(environment.timeout)
    if target.status == T.TRIGGERING:
        if target.agent_offered_at and now - target.agent_offered_at >= timedelta(seconds=timeout):
            seen = last_seen(environment.agent_seen_at)
            return (
                T.FAILED,
                AGENT_OFFLINE,
                f"the agent did not take the run within the environment's timeout of {timeout} s ({seen})",
            )
        return None
    silence = settings.AGENT_HEARTBEAT_TIMEOUT_SECONDS
    if target.agent_seen_at and now - target.agent_seen_at >= timedelta(seconds=silence):
        return T.FAILED, AGENT_LOST, f"the agent stopped reporting: nothing heard for more than {silence} s"
    if target.agent_claimed_at and now - target.agent_claimed_at >= timedelta(seconds=timeout):
        return (
            T.FAILED,
            "timeout",
            f"the script did not end within the environment's timeout of {timeout} s; the agent is told to stop it",
        )
    return None


def agent_runs_expire(*, targets=None) -> int:
    """End every agent-held run among `targets` (default: all) that must end now. Safe
    anywhere, any number of times at once: each end is a conditional transition."""
    queryset = CoordinationTarget.objects.all() if targets is None else targets
    active = (
        queryset.filter(held_by_agent(), status__in=ACTIVE)
        .select_related("coordination", "remote_environment")
        .order_by("pk")
    )
    now = timezone.now()
    ended = 0
    for target in active:
        verdict = _verdict(target, now)
        if verdict is None:
            continue
        status, reason, message = verdict
        ended += transition(
            target,
            status,
            stage=Stage.RUN,
            message=message,
            data={"reason": reason},
            fields={"reason": reason, "error": message},
        )
    return ended


def agent_runs_followed(target_pks: set[int], *, let_go: bool) -> set[int]:
    """For a coordinator task that offered these runs: which no longer count against its
    `parallel_limit`. Runs polling agents hold end through the agent's own requests (or
    overdue, here). A task that is stopping lets go of them all: they go on without it (a
    cancel has ended them already)."""
    if not target_pks:
        return set()
    if let_go:
        return set(target_pks)
    agent_runs_expire(targets=CoordinationTarget.objects.filter(pk__in=target_pks))
    return set(
        CoordinationTarget.objects.filter(pk__in=target_pks, status__in=TARGET_TERMINAL).values_list("pk", flat=True)
    )
