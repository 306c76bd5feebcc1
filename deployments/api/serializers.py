"""Request and response shapes of the deployment endpoints.

Responses are read-only ModelSerializers over rows the selectors loaded with everything
they show (a constant number of queries per list). Secrets never appear here: they live on
environments, and coordinations, targets and events hold none. What only ADMINs see (an
agent's answer body, EC2 user_data: deployments/redaction.py) is masked unless the request
is an ADMIN's.
"""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.roles import is_admin
from deployments.models import Coordination, CoordinationStatus, CoordinationTarget, StageEvent
from deployments.redaction import HIDDEN, ec2_config_shown, event_data_shown, response_excerpt_shown
from deployments.selectors import coordination_progress, targets_shown
from environments import rollout as rollouts
from environments.tags import MAX_SELECTED_TAGS
from powerautomation.api import RejectUnknownFieldsMixin

# --- Requests ----------------------------------------------------------------------------


class EC2Serializer(RejectUnknownFieldsMixin, serializers.Serializer):
    instance_id = serializers.CharField(
        required=False, allow_blank=True, max_length=64, help_text="EC2 instance id, e.g. i-0123456789abcdef0."
    )
    public_ip = serializers.CharField(
        required=False, allow_blank=True, max_length=64, help_text="The new platform's public IP address."
    )


# --- The rollout policy: environments.rollout holds its one rule; these describe it -----------

ROLLOUT = "rollout"
_COUNT = {"type": "integer", "minimum": 1, "maximum": rollouts.MAX_COUNT}
_PERCENT = {"type": "string", "pattern": "^[0-9]{1,3}%$", "description": 'A percentage of the targets, e.g. "25%".'}
_SECONDS = {"type": "integer", "minimum": 0, "maximum": rollouts.MAX_PAUSE_SECONDS}


@extend_schema_field(
    {
        "oneOf": [
            _COUNT,
            _PERCENT,
            {
                "type": "array",
                "items": {"oneOf": [_COUNT, _PERCENT]},
                "minItems": 1,
                "maxItems": rollouts.MAX_WAVE_ELEMENTS,
            },
        ],
        "nullable": True,
    }
)
class BatchSizeField(serializers.JSONField):
    """A wave size, or a list of them (the last one repeats)."""


@extend_schema_field({"oneOf": [{**_COUNT, "minimum": 0}, _PERCENT], "nullable": True})
class MaxFailuresField(serializers.JSONField):
    """A number of targets, or a percentage of them ("0%" allowed)."""


@extend_schema_field({"oneOf": [{"type": "string", "enum": [rollouts.APPROVAL]}, _SECONDS], "nullable": True})
class PauseAfterFirstBatchField(serializers.JSONField):
    """The string "approval", or a number of seconds."""


@extend_schema_field({**_SECONDS, "nullable": True})
class SecondsField(serializers.JSONField):
    pass


@extend_schema_field({"type": "string", "enum": list(rollouts.CONCURRENCY), "nullable": True})
class ConcurrencyField(serializers.JSONField):
    pass


class RolloutSerializer(serializers.Serializer):
    """How the deployment walks its targets; each key left out (or null) takes the config
    file's default (`deployment_settings`)."""

    # The fields describe the keys (the schema, the error's place); the validation is
    # environments.rollout's, the very call the service makes: a value is refused here
    # exactly when the service would refuse it.

    batch_size = BatchSizeField(
        required=False,
        allow_null=True,
        help_text='Ansible\'s `serial`: the size of each wave in turn, a number or "N%" of the targets; the last '
        'one repeats. E.g. [1, "25%"]: one canary, then a quarter at a time. Unset: one wave of every target.',
    )
    max_failures = MaxFailuresField(
        required=False,
        allow_null=True,
        help_text='SSM\'s `MaxErrors`: once more than this many targets (a number or "N%") have failed, no further '
        "target starts; the rest end cancelled (reason failure_budget). Unset: no budget.",
    )
    pause_after_first_batch = PauseAfterFirstBatchField(
        required=False,
        allow_null=True,
        help_text=f'Once the first wave has ended within the budget: "{rollouts.APPROVAL}" waits in status '
        "awaiting_approval until an ADMIN approves (coordinations/<id>/approve/) or cancels; a number waits that "
        "many seconds.",
    )
    batch_pause_seconds = SecondsField(required=False, allow_null=True, help_text="The pause between later waves.")
    concurrency = ConcurrencyField(
        required=False,
        allow_null=True,
        help_text="A target whose environment another running coordination holds: waits for it (queue), refuses "
        "the whole deployment with 409 (reject), or cancels the older run there (supersede).",
    )

    def to_internal_value(self, data) -> dict:
        try:
            rollouts.Rollout.from_json(data, prefix=ROLLOUT)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(_rollout_errors(exc)) from None
        return dict(data)


def _rollout_errors(exc: DjangoValidationError) -> dict | list:
    """The rule's errors (keyed `rollout` or `rollout.<key>`) as the `rollout` field's:
    its own messages, or each key's under that key."""
    errors = exc.message_dict
    if ROLLOUT in errors:
        return errors[ROLLOUT]
    return {name.removeprefix(f"{ROLLOUT}."): messages for name, messages in errors.items()}


class TriggerLocalSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """What `trigger_local` takes on its command line, as JSON; any other field is a 400."""

    environments = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        allow_null=True,
        max_length=10000,
        help_text="Environment ids to deploy to. Left out or null (and no `tags`): every enabled environment.",
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50),
        required=False,
        allow_null=True,
        max_length=MAX_SELECTED_TAGS,
        help_text="Also deploy to every enabled environment that has any of these tags. A tag no environment has "
        "is a 400.",
    )
    exclude_tags = serializers.ListField(
        child=serializers.CharField(max_length=50),
        required=False,
        allow_null=True,
        max_length=MAX_SELECTED_TAGS,
        help_text="Leave out every environment that has any of these tags, named ones too.",
    )
    coordination_id = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Id for the new coordination (default: generated)."
    )
    version = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="Deployment version.")
    ec2 = EC2Serializer(required=False, help_text="The EC2 platform deploy this run follows.")
    ec2_deployment_config = serializers.DictField(
        required=False,
        help_text=(
            'The EC2 stage: {"instance_id"} waits for that instance to run and pass its status checks; '
            '{"image_id", "instance_type", "key_name", "security_group_ids", "subnet_id", "user_data", "tags"} '
            'launches one first; "platform_health_url" then waits until the platform answers 2xx there.'
        ),
    )
    rollout = RolloutSerializer(
        required=False,
        allow_null=True,
        help_text="The rollout policy: overrides the config file's deployment_settings key by key.",
    )

    def service_arguments(self) -> dict:
        """The validated body as `coordination_start` keyword arguments."""
        data = self.validated_data
        ec2 = data.get("ec2") or {}
        arguments = {
            "environment_ids": data.get("environments"),
            "coordination_id": data.get("coordination_id", ""),
            "version": data.get("version", ""),
            "ec2_instance_id": ec2.get("instance_id", ""),
            "ec2_public_ip": ec2.get("public_ip", ""),
            "ec2_deployment_config": data.get("ec2_deployment_config"),
        }
        # Only when given: a request without them keeps the Idempotency-Key fingerprint
        # it had before selecting by tag and rollouts existed.
        arguments.update({name: data[name] for name in ("tags", "exclude_tags", ROLLOUT) if data.get(name) is not None})
        return arguments


# Service argument names → the trigger body's fields, for validation errors (the
# project's exception handler reads them from the view's `field_paths`).
SERVICE_FIELD_PATHS = {
    "ec2_instance_id": ("ec2", "instance_id"),
    "ec2_public_ip": ("ec2", "public_ip"),
    **{f"{ROLLOUT}.{key}": (ROLLOUT, key) for key in rollouts.KEYS},
}


# --- Responses ---------------------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Target environments in all.")
    done = serializers.IntegerField(help_text="Targets that have ended, whatever their outcome.")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Failed or interrupted.")
    cancelled = serializers.IntegerField()
    running = serializers.IntegerField(help_text="Triggering or running.")
    pending = serializers.IntegerField(help_text="Not started yet.")


class EC2DetailsSerializer(serializers.Serializer):
    instance_id = serializers.CharField()
    public_ip = serializers.CharField()


class TargetSummarySerializer(serializers.ModelSerializer):
    """One environment's part in a coordination, as lists show it."""

    class Meta:
        model = CoordinationTarget
        fields = ("environment_id", "status", "reason", "exit_code", "finished_at", "wave", "waiting_for")
        read_only_fields = fields


def for_admin(context: dict) -> bool:
    """Does this serializer answer an ADMIN's request? A command's JSON or a notification
    (no request) is shown as a VIEWER sees it."""
    request = context.get("request")
    return request is not None and is_admin(request.user)


class TargetSerializer(serializers.ModelSerializer):
    """One environment's part in a coordination, in full."""

    response_excerpt = serializers.SerializerMethodField(
        help_text="The start of the body the agent answered when it refused the trigger: for ADMINs; "
        f'"{HIDDEN}" for everyone else.'
    )

    output_url = serializers.SerializerMethodField(
        help_text="The environment's whole output (plain text; JSON with Accept: application/json)."
    )

    class Meta:
        model = CoordinationTarget
        fields = (
            "environment_id",
            "status",
            "wave",
            "waiting_for",
            "reason",
            "error",
            "response_excerpt",
            "exit_code",
            "attempts",
            "started_at",
            "finished_at",
            "output_tail",
            "output_bytes",
            "output_url",
            "remote_run_id",
        )
        read_only_fields = fields

    def get_response_excerpt(self, target: CoordinationTarget) -> str:
        return response_excerpt_shown(target.response_excerpt, admin=for_admin(self.context))

    def get_output_url(self, target: CoordinationTarget) -> str:
        path = reverse(
            "api:coordination-environment-output",
            kwargs={"coordination_id": target.coordination.coordination_id, "environment_id": target.environment_id},
        )
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class RolloutPlanSerializer(serializers.Serializer):
    """The rollout a coordination runs: its policy (the config file's defaults with the
    deployment's overrides), and its waves and failure budget, resolved against its
    targets when it was created."""

    batch_size = BatchSizeField(allow_null=True)
    max_failures = MaxFailuresField(allow_null=True)
    pause_after_first_batch = PauseAfterFirstBatchField(allow_null=True)
    batch_pause_seconds = SecondsField()
    concurrency = ConcurrencyField()
    waves = serializers.ListField(child=serializers.IntegerField(), help_text="How many targets each wave takes.")
    failure_budget = serializers.IntegerField(
        allow_null=True, help_text="How many targets may fail before no further one starts; null: no budget."
    )


PLAN_KEYS = tuple(RolloutPlanSerializer._declared_fields)


def rollout_shown(coordination: Coordination) -> dict:
    """The rollout as stored. A coordination created before rollouts existed (nothing
    stored) ran as the built-in policy runs: one wave of every target, no budget."""
    plan = coordination.rollout or rollouts.Rollout().resolved(coordination_progress(coordination)["total"])
    return {key: plan.get(key) for key in PLAN_KEYS}


class CoordinationSummarySerializer(serializers.ModelSerializer):
    """A coordination as lists show it: no script output."""

    triggered_by_user = serializers.SerializerMethodField(help_text="Username of who started it, if a user did.")
    rollout = serializers.SerializerMethodField()
    approved_by = serializers.SerializerMethodField(
        help_text="Who approved the rollout after its first wave: the ADMIN's username, or the machine account of a "
        "command (`command (user@host)`); null until approved."
    )
    ec2 = serializers.SerializerMethodField()
    retry_of = serializers.SlugRelatedField(
        slug_field="coordination_id",
        read_only=True,
        allow_null=True,
        help_text="The coordination this one retries, if any.",
    )
    progress = serializers.SerializerMethodField()
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    environments = serializers.SerializerMethodField(
        help_text="Its environments by id: every one, or in the API those that need attention most (failed, then "
        "running, pending, cancelled, succeeded) up to a limit; `environments_url` pages through them all."
    )
    environments_url = serializers.SerializerMethodField(help_text="All its environments, a page at a time.")
    url = serializers.SerializerMethodField(help_text="This coordination's record.")
    target_serializer: type[serializers.Serializer] = TargetSummarySerializer

    class Meta:
        model = Coordination
        fields = (
            "coordination_id",
            "status",
            "triggered_by",
            "triggered_by_user",
            "version",
            "ec2",
            "error",
            "retry_of",
            "rollout",
            "wave",
            "approved_at",
            "approved_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "progress",
            "environments",
            "environments_url",
            "url",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_triggered_by_user(self, coordination: Coordination) -> str | None:
        user = coordination.triggered_by_user
        return user.get_username() if user is not None else None

    @extend_schema_field(RolloutPlanSerializer)
    def get_rollout(self, coordination: Coordination) -> dict:
        return rollout_shown(coordination)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_approved_by(self, coordination: Coordination) -> str | None:
        return coordination.approver or None

    @extend_schema_field(EC2DetailsSerializer)
    def get_ec2(self, coordination: Coordination) -> dict:
        return {"instance_id": coordination.ec2_instance_id, "public_ip": coordination.ec2_public_ip}

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, coordination: Coordination) -> dict:
        return coordination_progress(coordination)

    @extend_schema_field(TargetSummarySerializer(many=True))
    def get_environments(self, coordination: Coordination) -> list:
        return self.target_serializer(targets_shown(coordination), many=True, context=self.context).data

    def get_environments_url(self, coordination: Coordination) -> str:
        return absolute_url(self.context, "api:coordination-environments", coordination.coordination_id)

    def get_url(self, coordination: Coordination) -> str:
        return absolute_url(self.context, "api:coordination-detail", coordination.coordination_id)


class CoordinationDetailSerializer(CoordinationSummarySerializer):
    """A coordination in full: every environment's outcome and output tail."""

    ec2_deployment_config = serializers.SerializerMethodField(
        help_text='How the EC2 stage ran; its user_data shown as "set (N bytes)" to everyone but ADMINs.'
    )
    events_url = serializers.SerializerMethodField(help_text="Its events, to follow progress.")

    target_serializer = TargetSerializer

    class Meta(CoordinationSummarySerializer.Meta):
        fields = (*CoordinationSummarySerializer.Meta.fields, "ec2_deployment_config", "events_url")
        read_only_fields = fields

    @extend_schema_field(TargetSerializer(many=True))
    def get_environments(self, coordination: Coordination) -> list:
        return super().get_environments(coordination)

    @extend_schema_field(serializers.DictField())
    def get_ec2_deployment_config(self, coordination: Coordination) -> dict:
        return ec2_config_shown(coordination.ec2_deployment_config, admin=for_admin(self.context))

    def get_events_url(self, coordination: Coordination) -> str:
        return absolute_url(self.context, "api:coordination-events", coordination.coordination_id)


class TriggerAcceptedSerializer(serializers.Serializer):
    """A coordination was queued (or an Idempotency-Key replay found the one that was)."""

    coordination_id = serializers.CharField()
    status = serializers.ChoiceField(choices=CoordinationStatus.choices)
    status_url = serializers.CharField(help_text="GET it to see the coordination in full.")
    events_url = serializers.CharField(help_text="GET it with ?after=<last event id> to follow progress.")
    environments = serializers.ListField(child=serializers.CharField(), help_text="The target environment ids.")
    retry_of = serializers.CharField(allow_null=True, help_text="The coordination this one retries, if any.")

    @classmethod
    def for_coordination(cls, coordination: Coordination, *, context: dict) -> dict:
        status_url = absolute_url(context, "api:status") + f"?coordination_id={coordination.coordination_id}"
        return {
            "coordination_id": coordination.coordination_id,
            "status": coordination.status,
            "status_url": status_url,
            "events_url": absolute_url(context, "api:coordination-events", coordination.coordination_id),
            "environments": list(
                coordination.targets.order_by("environment_id").values_list("environment_id", flat=True)
            ),
            "retry_of": coordination.retry_of.coordination_id if coordination.retry_of_id else None,
        }


class StageEventSerializer(serializers.ModelSerializer):
    data = serializers.SerializerMethodField(
        help_text=f'Facts about the step; an agent\'s answer body (response_excerpt) is "{HIDDEN}" but to ADMINs.'
    )

    class Meta:
        model = StageEvent
        fields = ("id", "created_at", "environment_id", "stage", "old_status", "new_status", "message", "data")
        read_only_fields = fields

    @extend_schema_field(serializers.DictField())
    def get_data(self, event: StageEvent) -> dict:
        return event_data_shown(event.data, admin=for_admin(self.context))


class EventsPageSerializer(serializers.Serializer):
    """New events since a cursor. Poll with `after=next_after` until `finished` is true
    and `has_more` is false."""

    coordination_id = serializers.CharField()
    coordination_status = serializers.ChoiceField(choices=CoordinationStatus.choices)
    finished = serializers.BooleanField(
        help_text="The coordination and every environment in it have ended: no event will follow these."
    )
    events = StageEventSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Pass as ?after= to get the events after these.")
    has_more = serializers.BooleanField(help_text="More events are there already: ask again at once.")


class LastDeploymentSerializer(serializers.Serializer):
    coordination_id = serializers.CharField()
    coordination_status = serializers.ChoiceField(choices=CoordinationStatus.choices)
    status = serializers.CharField(help_text="This environment's outcome in it.")
    reason = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class EnvironmentStatusSerializer(serializers.Serializer):
    """An environment's last health check and last deployment outcome."""

    environment_id = serializers.CharField()
    environment_type = serializers.CharField()
    connection_method = serializers.CharField()
    enabled = serializers.BooleanField()
    last_health = serializers.CharField()
    last_health_at = serializers.DateTimeField(allow_null=True)
    last_health_detail = serializers.CharField()
    last_deployment = serializers.SerializerMethodField()

    @extend_schema_field(LastDeploymentSerializer(allow_null=True))
    def get_last_deployment(self, environment) -> dict | None:
        target = environment.last_target
        if target is None:
            return None
        return {
            "coordination_id": target.coordination.coordination_id,
            "coordination_status": target.coordination.status,
            "status": target.status,
            "reason": target.reason,
            "exit_code": target.exit_code,
            "finished_at": serializers.DateTimeField().to_representation(target.finished_at)
            if target.finished_at
            else None,
        }


class EnvironmentCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    enabled = serializers.IntegerField()
    health = serializers.DictField(
        child=serializers.IntegerField(), help_text="How many by last health check: healthy, unhealthy, unknown."
    )


class StatusOverviewSerializer(serializers.Serializer):
    """A bounded overview whatever the size of the fleet: the oldest active coordinations
    with their progress, counts of the environments, and those that need attention."""

    active = CoordinationSummarySerializer(
        many=True, help_text="Coordinations that have not ended, oldest first, up to a limit (`active_count`)."
    )
    active_count = serializers.IntegerField(help_text="How many coordinations have not ended.")
    environment_counts = EnvironmentCountsSerializer()
    environments = EnvironmentStatusSerializer(
        many=True,
        help_text="Environments whose last health check said unhealthy or whose last run failed, the unhealthy "
        "first, up to a limit (`attention_count`).",
    )
    attention_count = serializers.IntegerField(help_text="How many environments need attention in all.")
    environments_url = serializers.CharField(help_text="Every environment, a page at a time.")


class TargetListSerializer(TargetSerializer):
    """One environment's part in a coordination, as its paged list shows it: no output."""

    class Meta(TargetSerializer.Meta):
        fields = tuple(name for name in TargetSerializer.Meta.fields if name not in ("output_tail", "output_url"))
        read_only_fields = fields


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    status = serializers.ChoiceField(choices=CoordinationStatus.choices, help_text="The coordination's status.")


class BusyEnvironmentSerializer(serializers.Serializer):
    environment_id = serializers.CharField()
    coordination_id = serializers.CharField(help_text="The running coordination that holds it.")


class BusySerializer(serializers.Serializer):
    """`concurrency: reject` and some targets are in another running coordination."""

    detail = serializers.CharField()
    busy = BusyEnvironmentSerializer(many=True, help_text="Each busy environment and the coordination holding it.")

    @classmethod
    def for_busy(cls, busy: dict[str, str], message: str) -> dict:
        return {
            "detail": message,
            "busy": [
                {"environment_id": environment_id, "coordination_id": busy[environment_id]}
                for environment_id in sorted(busy)
            ],
        }


def absolute_url(context: dict, name: str, *args) -> str:
    """The URL of `name` as the request reached us, else under PLATFORM_BASE_URL (commands,
    notifications), else the path alone."""
    path = reverse(name, args=args)
    request = context.get("request")
    if request is not None:
        return request.build_absolute_uri(path)
    return f"{settings.PLATFORM_BASE_URL}{path}" if settings.PLATFORM_BASE_URL else path
