"""An environment over the API: the config file's field names and rules.

Writes are validated by the model's own `full_clean()` (its `clean()` holds the
cross-field rules), exactly as `import_environments` validates a file entry, and a new or
replaced environment gets the same defaults an entry of the file gets. Secrets are
write-only: a response says `<name>_set: true|false`, never a value. Left out of a PATCH
or a PUT, a secret keeps its stored value; an empty string clears it. A write that changes
where a stored secret is sent (host, port, api_endpoint, webhook_url, connection_method)
must give that secret again, or it is refused naming the secret. `tags` follow the same
rule everywhere (environments/tags.py), checked by the model's validator; left out of a
PUT they keep their stored value, as in an import, and so does `detach` (true, false or
null: follow ssh_settings.detach). A field the serializer does not have
is a 400 naming it.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from environments import bounds, tags as tag_rules
from environments.config import ENVIRONMENT_FIELDS
from environments.connectors.polling import last_seen
from environments.models import RETARGETING_HELP, SECRET_FIELDS, ConnectionMethod, RemoteEnvironment
from environments.services import environment_prepare, environment_save
from powerautomation.api import RejectUnknownFieldsMixin, field_errors

HEALTH_FIELDS = ("last_health", "last_health_at", "last_health_detail", "last_health_latency_ms")
AGENT_FIELDS = ("agent_token_set", "agent_seen_at", "agent_last_seen")
READ_ONLY_FIELDS = (*HEALTH_FIELDS, "agent_seen_at", "created_at", "updated_at")
# Out of range: the same message as the model's validators and the config file import.
BOUNDED_FIELDS = {"port": bounds.PORT, "timeout": bounds.TIMEOUT, "poll_interval": bounds.POLL_INTERVAL}


def _range_messages(bound: bounds.Bound) -> dict:
    message = f"Enter {bound.describe()}."
    return {"error_messages": {"min_value": message, "max_value": message, "max_string_length": message}}


def _secret_set(environment: RemoteEnvironment, name: str) -> bool:
    # Lists annotate `<name>_set` and never load (or decrypt) the secret itself.
    flag = environment.__dict__.get(f"{name}_set")
    return bool(flag) if flag is not None else bool(getattr(environment, name))


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "pattern": f"^{tag_rules.TAG.pattern}$", "maxLength": 50},
        "maxItems": tag_rules.MAX_TAGS,
        "uniqueItems": True,
    }
)
class TagsField(serializers.JSONField):
    """Any JSON, passed to the model's validator: one rule, and one message, for the API,
    the config file and the admin (a ListField would quietly turn 1 into "1")."""


class TrueFalseOrNullField(serializers.BooleanField):
    """JSON true, false or null only, as in the config file (BooleanField would also take
    "yes", "on" or 1)."""

    default_error_messages = {"invalid": "Must be true, false or null."}

    def __init__(self, **kwargs):
        super().__init__(allow_null=True, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)


class RemoteEnvironmentSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    detach = TrueFalseOrNullField(
        required=False,
        help_text="SSH: true runs the init script detached (it survives a worker restart), false attached "
        "(under a pty). null: ssh_settings.detach (default true). Left out of a PUT: the stored value is kept.",
    )
    tags = TagsField(
        required=False,
        help_text=f"Labels to select environments by: at most {tag_rules.MAX_TAGS}, each once; "
        f"{tag_rules.TAG_HINT}. Left out of a PUT: the stored tags are kept.",
    )
    password_set = serializers.SerializerMethodField(help_text="A password is stored.")
    api_token_set = serializers.SerializerMethodField(help_text="An api_token is stored.")
    webhook_secret_set = serializers.SerializerMethodField(help_text="A webhook_secret is stored.")
    agent_token = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Polling agents: the agent's token (32-200 visible ASCII characters). Write-only, stored only as "
        "its hash. Left out: kept. Empty string: cleared.",
    )
    agent_token_set = serializers.SerializerMethodField(help_text="Polling agents: an agent token is set.")
    agent_last_seen = serializers.SerializerMethodField(
        help_text="Polling agents: 'agent last seen N s ago' (or 'agent never seen'); null for other methods."
    )

    class Meta:
        model = RemoteEnvironment
        fields = (
            *ENVIRONMENT_FIELDS,
            *(f"{name}_set" for name in SECRET_FIELDS),
            "agent_token_set",
            "agent_last_seen",
            *READ_ONLY_FIELDS,
        )
        read_only_fields = READ_ONLY_FIELDS
        extra_kwargs = {
            name: {
                "write_only": True,
                "required": False,
                "allow_blank": True,
                "trim_whitespace": False,
                "style": {"input_type": "password"},
                "help_text": "Write-only. Left out: the stored value is kept. Empty string: cleared. "
                + RETARGETING_HELP,
            }
            for name in SECRET_FIELDS
        } | {name: _range_messages(bound) for name, bound in BOUNDED_FIELDS.items()}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance is not None and "environment_id" in self.fields:
            # The URL names the environment; the body may repeat it, not change it.
            self.fields["environment_id"].required = False

    @extend_schema_field(bool)
    def get_password_set(self, environment) -> bool:
        return _secret_set(environment, "password")

    @extend_schema_field(bool)
    def get_api_token_set(self, environment) -> bool:
        return _secret_set(environment, "api_token")

    @extend_schema_field(bool)
    def get_webhook_secret_set(self, environment) -> bool:
        return _secret_set(environment, "webhook_secret")

    @extend_schema_field(bool)
    def get_agent_token_set(self, environment) -> bool:
        return bool(environment.agent_token_hash)

    @extend_schema_field({"type": "string", "nullable": True})
    def get_agent_last_seen(self, environment) -> str | None:
        if environment.connection_method != ConnectionMethod.POLLING:
            return None
        return last_seen(environment.agent_seen_at)

    def validate(self, attrs: dict) -> dict:
        """Build the environment as it would be saved and run the model's validation.

        POST: fields left out take the config file's defaults. PUT: like an entry of an
        imported file, fields left out take their defaults, except the secrets, `enabled`,
        `host_key`, `tags` and `detach`, which keep their values. PATCH: only the fields sent change."""
        try:
            self._environment = environment_prepare(data=attrs, current=self.instance, partial=self.partial)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(field_errors(exc)) from None
        return attrs

    def _user(self):
        request = self.context.get("request")
        return request.user if request is not None else None

    def create(self, validated_data: dict) -> RemoteEnvironment:
        return environment_save(environment=self._environment, user=self._user())

    def update(self, instance: RemoteEnvironment, validated_data: dict) -> RemoteEnvironment:
        return environment_save(environment=self._environment, user=self._user())
