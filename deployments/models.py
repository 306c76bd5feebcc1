import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone


class CoordinationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    EC2_DEPLOYING = "ec2_deploying", "EC2 deploying"
    EC2_COMPLETED = "ec2_completed", "EC2 completed"
    LOCAL_TRIGGERING = "local_triggering", "Triggering local environments"
    LOCAL_DEPLOYING = "local_deploying", "Local environments deploying"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    LOCAL_COMPLETED = "local_completed", "Local environments finished"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


COORDINATION_TERMINAL = frozenset(
    {CoordinationStatus.COMPLETED, CoordinationStatus.FAILED, CoordinationStatus.CANCELLED}
)
COORDINATION_ACTIVE = frozenset(set(CoordinationStatus) - COORDINATION_TERMINAL)


class TargetStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    TRIGGERING = "triggering", "Triggering"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    INTERRUPTED = "interrupted", "Interrupted"


TARGET_TERMINAL = frozenset(
    {TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.CANCELLED, TargetStatus.INTERRUPTED}
)
TARGET_ACTIVE = frozenset({TargetStatus.TRIGGERING, TargetStatus.RUNNING})


class TriggerSource(models.TextChoices):
    COMMAND = "command", "Management command"
    API = "api", "API"
    ADMIN = "admin", "Admin"
    STARTUP = "startup", "Platform start"


class Stage(models.TextChoices):
    COORDINATION = "coordination", "Coordination"
    EC2 = "ec2", "EC2 platform"
    TRIGGER = "trigger", "Trigger"
    RUN = "run", "Run"
    VERIFY = "verify", "Verify"
    NOTIFY = "notify", "Notification"


class Coordination(models.Model):
    """One deployment run: the EC2 platform stage, then every target environment's init
    script, then verification. Its status moves only through `deployments.transitions`."""

    coordination_id = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=20, choices=CoordinationStatus.choices, default=CoordinationStatus.PENDING)
    triggered_by = models.CharField(max_length=20, choices=TriggerSource.choices)
    triggered_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(
        null=True, blank=True, help_text="When an ADMIN approved the rollout after its first wave."
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approver = models.CharField(
        max_length=200,
        blank=True,
        help_text="Who approved, as the events say it: the ADMIN's username, or the machine account of a command.",
    )
    ec2_instance_id = models.CharField(max_length=64, blank=True)
    ec2_public_ip = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=100, blank=True)
    ec2_deployment_config = models.JSONField(default=dict, blank=True)
    settings = models.JSONField(default=dict, blank=True, help_text="The deployment defaults this run uses.")
    rollout = models.JSONField(
        default=dict,
        blank=True,
        help_text="The rollout policy this run uses (environments.rollout), with its waves and failure budget "
        "resolved against its targets when it was created.",
    )
    # Where the rollout is, kept in the database so that a worker that dies anywhere
    # (mid-wave, in a pause, awaiting approval) leaves the next one exactly this.
    wave = models.PositiveIntegerField(default=0, help_text="The wave open now (0: none opened yet).")
    next_wave_at = models.DateTimeField(
        null=True, blank=True, help_text="During a pause between waves: when the next wave may open."
    )
    error = models.TextField(blank=True, help_text="Why the coordination failed, in one paragraph.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requeued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reaper last handed this coordination to a live worker."
    )
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The coordination whose failed environments this one runs again.",
    )
    # The API's Idempotency-Key header: a replayed trigger returns this coordination
    # instead of starting another. The unique constraint, not a check, settles a race.
    idempotency_key = models.CharField(max_length=255, blank=True)
    idempotency_fingerprint = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the request the idempotency key was first sent with."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="coordination_status_created"),
            models.Index(fields=["-created_at", "-id"], name="coordination_recent"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="%(app_label)s_%(class)s_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return self.coordination_id

    @property
    def is_terminal(self) -> bool:
        return self.status in COORDINATION_TERMINAL

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class CoordinationTarget(models.Model):
    """One environment's part in a coordination, and its outcome. Kept when the
    environment is later deleted (`environment_id` is a copy of its name)."""

    coordination = models.ForeignKey(Coordination, on_delete=models.CASCADE, related_name="targets")
    remote_environment = models.ForeignKey(
        "environments.RemoteEnvironment", null=True, blank=True, on_delete=models.SET_NULL, related_name="targets"
    )
    environment_id = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=TargetStatus.choices, default=TargetStatus.PENDING)
    wave = models.PositiveIntegerField(default=1, help_text="The rollout wave this target runs in.")
    waiting_for = models.CharField(
        max_length=100,
        blank=True,
        help_text="While pending: the coordination running on this environment that this target waits for.",
    )
    stop_requested = models.CharField(
        max_length=200,
        blank=True,
        help_text="Why another coordination asked for this target's run to stop (a supersede); the worker "
        "running it hangs up.",
    )
    reason = models.CharField(
        max_length=40, blank=True, help_text="Short reason for a failure: timeout, exit_code, ..."
    )
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(
        blank=True,
        help_text="The start of the body an agent answered when it refused the trigger (secrets blanked): "
        "shown to ADMINs only.",
    )
    attempts = models.PositiveIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output_tail = models.TextField(blank=True, help_text="The last part of the script's output.")
    output_bytes = models.BigIntegerField(default=0, help_text="Bytes of output received in all.")
    # The whole output is kept as OutputChunk rows (deployments/script_output.py): these
    # say how long it is (secrets masked) and how much of its middle was dropped past the cap.
    output_length = models.BigIntegerField(
        default=0, help_text="Bytes of output stored so far (after secrets were masked), dropped ones included."
    )
    output_dropped = models.BigIntegerField(
        default=0, help_text="Bytes dropped from the middle of the output past DEPLOYMENT_OUTPUT_MAX_BYTES."
    )
    output_held = models.TextField(
        blank=True,
        help_text="The output's last characters while they may be the start of a secret (stored once they cannot).",
    )
    lease = models.ForeignKey(
        "RunLease",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="targets",
        help_text="The coordinator task that claimed this target, while it holds it.",
    )
    # A polling environment's run is held by its agent, not by a worker's lease
    # (deployments/agent_runs.py): offered, then claimed by one poll, then heard from.
    agent_offered_at = models.DateTimeField(
        null=True, blank=True, help_text="Polling agents: when the run was offered to the agent."
    )
    agent_claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="Polling agents: when the agent took the run."
    )
    agent_seen_at = models.DateTimeField(
        null=True, blank=True, help_text="Polling agents: the agent's last word on this run."
    )
    agent_run_id = models.CharField(
        max_length=64, blank=True, help_text="Polling agents: the run's id, given only to the agent that took it."
    )
    # A detached SSH run (environments/connectors/ssh_detached.py) outlives the worker that
    # started it: the next one re-attaches by its id and reads on from the recorded offset.
    remote_run_id = models.CharField(
        max_length=140,
        blank=True,
        help_text="Detached SSH runs: the run's id on the machine (its run directory's name).",
    )
    remote_offset = models.BigIntegerField(
        default=0, help_text="Detached SSH runs: bytes of the run's output file recorded so far."
    )

    class Meta:
        ordering = ["coordination_id", "environment_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["coordination", "environment_id"], name="%(app_label)s_%(class)s_unique_environment"
            ),
            # One run per machine at a time, across every process and cluster: of two
            # coordinations claiming the same environment, the database lets one through.
            models.UniqueConstraint(
                fields=["remote_environment"],
                condition=models.Q(status__in=sorted(TARGET_ACTIVE)),
                name="%(app_label)s_%(class)s_one_run_per_environment",
            ),
            models.UniqueConstraint(
                fields=["agent_run_id"], condition=~models.Q(agent_run_id=""), name="target_agent_run_id"
            ),
        ]
        # An environment's most recent outcome (the API's status overview).
        indexes = [
            models.Index(fields=["remote_environment", "-id"], name="target_environment_recent"),
            models.Index(fields=["coordination", "wave", "status"], name="target_wave_status"),
            # Targets queued behind another coordination, by machine (woken when it frees).
            models.Index(
                fields=["remote_environment"],
                name="target_waiting",
                condition=models.Q(status="pending") & ~models.Q(waiting_for=""),
            ),
            # Runs offered to a machine's polling agent: what its poll looks up.
            models.Index(
                fields=["remote_environment"],
                name="target_offered_to_agent",
                condition=models.Q(status="triggering", agent_offered_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TARGET_TERMINAL


class AppendOnlyError(Exception):
    """Something tried to rewrite the record of what happened."""


class StageEvent(models.Model):
    """Append-only record of every step of a coordination: each status change of the
    coordination or of one of its targets writes exactly one row, and notes (a retry, a
    health check) write one each. Never updated or deleted on its own."""

    coordination = models.ForeignKey(Coordination, on_delete=models.CASCADE, related_name="events")
    target = models.ForeignKey(
        CoordinationTarget, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    environment_id = models.CharField(max_length=100, blank=True, help_text="Empty for coordination-level events.")
    stage = models.CharField(max_length=20, choices=Stage.choices)
    old_status = models.CharField(max_length=20, blank=True)
    new_status = models.CharField(max_length=20, blank=True)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["coordination", "id"], name="stageevent_cursor")]

    def __str__(self) -> str:
        who = self.environment_id or "coordination"
        return f"{who}: {self.old_status or '-'} → {self.new_status or '-'} {self.message}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("a StageEvent is never changed once written")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("a StageEvent is never deleted on its own (it goes with its coordination)")


class CallbackToken(models.Model):
    """The single-use credential in an http_api/webhook target's callback_url. Only its
    SHA-256 is stored. The web process records the agent's result here; the coordinator
    (the only writer of statuses) picks it up and ends the target."""

    target = models.OneToOneField(CoordinationTarget, on_delete=models.CASCADE, related_name="callback")
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["target"], name="callback_answered", condition=models.Q(used_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"callback for target {self.target_id}"

    @staticmethod
    def hash_of(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


class RunLease(models.Model):
    """A coordinator task at work on a coordination, kept alive by its heartbeat.

    The lead lease (one per coordination) runs the stages; other leases only deliver to
    targets they claim. A lease that expires means its worker died: the reaper marks its
    started targets interrupted and hands the coordination to a live worker."""

    coordination = models.ForeignKey(Coordination, on_delete=models.CASCADE, related_name="leases")
    owner = models.CharField(max_length=200, help_text="host:pid of the worker process.")
    is_lead = models.BooleanField(default=False)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["coordination"],
                condition=models.Q(is_lead=True),
                name="%(app_label)s_%(class)s_one_lead",
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="runlease_expiry")]

    def __str__(self) -> str:
        return f"{'lead' if self.is_lead else 'shard'} lease of {self.owner}"


class OutputChunk(models.Model):
    """A piece of one environment's script output, appended as it arrives: a crash loses
    nothing already received and an append costs the same at 10 MiB as at 10 bytes.
    `position` and `end` are byte offsets in the environment's whole output."""

    target = models.ForeignKey(CoordinationTarget, on_delete=models.CASCADE, related_name="output_chunks")
    position = models.BigIntegerField()
    end = models.BigIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["target_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["target", "position"], name="output_chunk_position"),
        ]

    def __str__(self) -> str:
        return f"output {self.position}..{self.end} of {self.target_id}"


class AutoDeploy(models.Model):
    """The claim that the platform's start already triggered the deployment of a version
    (`AUTO_DEPLOY_ON_STARTUP`). Every web and worker process that starts tries to insert
    it; the unique version lets exactly one of them through, on any number of machines."""

    version = models.CharField(max_length=100, unique=True)
    coordination = models.ForeignKey(Coordination, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    claimed_by = models.CharField(max_length=200, help_text="host:pid (web or worker) of the process that started it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"auto-deploy of {self.version}"
