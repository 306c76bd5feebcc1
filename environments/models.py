from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.utils import timezone

from environments import agent_tokens, bounds, tags as tag_rules
from environments.connectors import http_api, webhook
from environments.connectors.base import Target
from environments.connectors.ssh import parse_host_key
from environments.fields import EncryptedTextField

SECRET_FIELDS = ("password", "api_token", "webhook_secret")
# A polling agent's token: written like a secret, stored only as its hash (agent_tokens).
AGENT_TOKEN = "agent_token"  # noqa: S105 (a field name)
WRITE_ONLY_FIELDS = (*SECRET_FIELDS, AGENT_TOKEN)
# The fields that say where a secret is sent (see RemoteEnvironment.secret_destinations).
DESTINATION_FIELDS = ("connection_method", "host", "port", "api_endpoint", "webhook_url")
RETARGETING_HELP = (
    "Changing where it is sent (connection_method, host, port, api_endpoint or webhook_url) needs it again in the "
    "same change: a stored secret is never sent to a new address."
)

identifier_validator = RegexValidator(
    r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}\Z",
    "Use 1-100 letters, digits, '_', '.', ':' or '-', starting with a letter or digit.",
)
host_validator = RegexValidator(
    r"\A(?!-)[A-Za-z0-9._:\[\]%-]{1,253}\Z",
    "Enter a host name or an IP address.",
)
http_url_validator = URLValidator(schemes=["http", "https"])


def bound_validators(bound: bounds.Bound) -> list:
    """The model's side of a shared bound (the config file's blocks use the same one)."""
    message = f"Enter {bound.describe()}."
    return [
        MinValueValidator(int(bound.minimum), message=message),
        MaxValueValidator(int(bound.maximum), message=message),
    ]


def validate_no_control_characters(value: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError("Control characters (newlines, NUL, ...) are not allowed.")


# URLValidator lets NUL and ESC through; PostgreSQL refuses NUL in a write.
URL_VALIDATORS = [validate_no_control_characters, http_url_validator]


def validate_no_control_characters_in_text(value: str) -> None:
    """Free text (a description): line breaks and tabs are text; NUL and the other control
    characters are not (PostgreSQL refuses NUL, and the rest only hide what a page shows)."""
    if any((ord(ch) < 32 and ch not in "\t\n\r") or ord(ch) == 127 for ch in value):
        raise ValidationError("Control characters (NUL, escape, ...) are not allowed; tabs and line breaks are.")


def validate_host_key(value: str) -> None:
    """A pinned key as in known_hosts or a .pub file: '<type> <base64>' (comment allowed)."""
    try:
        parse_host_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_tags(value: object) -> None:
    problem = tag_rules.tags_problem(value)
    if problem:
        raise ValidationError(problem)


class TagListField(models.JSONField):
    """An environment's tags: a JSON list of labels (environments/tags.py).

    Only `[]` counts as empty. JSONField's own empty values also take `""` and `{}`, which
    would skip the validator and be stored as if they were a list of tags."""

    empty_values = [[]]


class EnvironmentType(models.TextChoices):
    MAC_LOCAL = "mac_local", "Mac"
    WINDOWS_LOCAL = "windows_local", "Windows"
    LINUX_LOCAL = "linux_local", "Linux"
    DOCKER = "docker", "Docker"


class ConnectionMethod(models.TextChoices):
    SSH = "ssh", "SSH"
    HTTP_API = "http_api", "HTTP API"
    WEBHOOK = "webhook", "Webhook"
    # The machine's agent asks the platform for work: nothing connects to the machine.
    POLLING = "polling", "Polling agent"


class Health(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"


class RemoteEnvironment(models.Model):
    """A local environment (a developer's machine or a container) that runs its init
    script after each platform deploy, and how the coordinator reaches it.

    Field names and meanings are those of the `remote_environments.json` config file.
    `password` and `api_token` are encrypted at rest and never leave the platform in a
    response, log line, event or export (unless an export asks for them explicitly), and a
    stored one is never sent to a new address (see retargeted_secrets).
    """

    environment_id = models.CharField(max_length=100, unique=True, validators=[identifier_validator])
    environment_type = models.CharField(max_length=20, choices=EnvironmentType.choices)
    connection_method = models.CharField(max_length=20, choices=ConnectionMethod.choices)
    host = models.CharField(max_length=253, blank=True, validators=[host_validator])
    port = models.PositiveIntegerField(default=22, validators=bound_validators(bounds.PORT))
    username = models.CharField(max_length=255, blank=True, validators=[validate_no_control_characters])
    ssh_key_path = models.CharField(max_length=1024, blank=True, validators=[validate_no_control_characters])
    password = EncryptedTextField(blank=True)
    api_token = EncryptedTextField(blank=True)
    webhook_secret = EncryptedTextField(
        blank=True, help_text="Signs webhook deliveries (Standard Webhooks). 'whsec_<base64>' or any text."
    )
    api_endpoint = models.CharField(max_length=2048, blank=True, validators=URL_VALIDATORS)
    webhook_url = models.CharField(max_length=2048, blank=True, validators=URL_VALIDATORS)
    init_script_path = models.CharField(
        max_length=1024, default="./init_aicore.sh", validators=[validate_no_control_characters]
    )
    working_directory = models.CharField(max_length=1024, blank=True, validators=[validate_no_control_characters])
    health_check_url = models.CharField(max_length=2048, blank=True, validators=URL_VALIDATORS)
    timeout = models.PositiveIntegerField(
        default=300, validators=bound_validators(bounds.TIMEOUT), help_text="Seconds, at most 604800 (7 days)."
    )
    description = models.TextField(blank=True, validators=[validate_no_control_characters_in_text])
    enabled = models.BooleanField(default=True)
    tags = TagListField(
        default=list,
        blank=True,
        validators=[validate_tags],
        help_text=f"Labels to select environments by (at most {tag_rules.MAX_TAGS}), e.g. mac, team-a.",
    )
    poll_interval = models.PositiveIntegerField(
        default=5,
        validators=bound_validators(bounds.POLL_INTERVAL),
        help_text="Polling agents: seconds between two requests for work (the agent jitters it).",
    )
    agent_token_hash = models.CharField(
        max_length=64, blank=True, editable=False, help_text="SHA-256 of the polling agent's token."
    )
    agent_seen_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the polling agent last asked for work."
    )
    # SSH only: None follows ssh_settings.detach (default: detached).
    detach = models.BooleanField(
        null=True,
        blank=True,
        choices=[(None, "default (ssh_settings)"), (True, "detached"), (False, "attached")],
        help_text="SSH: detached, the init script keeps running when the session closes (a worker restart "
        "re-attaches to it); attached, it runs under a pty and a closed session hangs it up. "
        "Default: ssh_settings.detach (detached unless it says false).",
    )
    host_key = models.TextField(
        blank=True,
        validators=[validate_host_key],
        help_text="Pinned SSH host public key ('ssh-ed25519 AAAA...'). Empty: verified against SSH_KNOWN_HOSTS.",
    )
    # Who pinned host_key (approving an offered key, or writing one: admin, API, import), and when;
    # no user when it came from a command.
    host_key_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    host_key_approved_at = models.DateTimeField(null=True, blank=True)

    last_health = models.CharField(max_length=20, choices=Health.choices, default=Health.UNKNOWN)
    last_health_at = models.DateTimeField(null=True, blank=True)
    last_health_detail = models.CharField(max_length=500, blank=True)
    last_health_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_health_changed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the health last changed between healthy and unhealthy."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535), name="%(app_label)s_%(class)s_port_range"
            ),
            models.CheckConstraint(condition=models.Q(timeout__gte=1), name="%(app_label)s_%(class)s_timeout_positive"),
            # One token, one environment: a poll is authenticated by the hash alone.
            models.UniqueConstraint(
                fields=["agent_token_hash"],
                condition=~models.Q(agent_token_hash=""),
                name="environment_agent_token_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.environment_id

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        self._remember_loaded(kwargs.get("update_fields"))
        self._secrets_given: set[str] = set()  # given for that write, not for the next one

    def refresh_from_db(self, using=None, fields=None, from_queryset=None) -> None:
        # Also how Django loads a deferred field on first access: what it read is loaded.
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        self._remember_loaded(fields)

    def _remember_loaded(self, names=None) -> None:
        """Record the in-memory values of `names` (default: every loaded field) as what the
        database holds now."""
        attnames = {f.name: f.attname for f in self._meta.concrete_fields}
        wanted = set(attnames.values()) if names is None else {attnames.get(name, name) for name in names}
        loaded = getattr(self, "_loaded_values", None) or {}
        loaded.update({name: self.__dict__[name] for name in wanted if name in self.__dict__})
        self._loaded_values = loaded

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        # What was read, so a write can save only what it changed (see changed_fields).
        instance._loaded_values = dict(zip(field_names, values, strict=True))
        return instance

    def changed_fields(self) -> list[str]:
        """The fields (attnames) set to another value since this instance was read (all of
        them for a new one): what a write owns, so saving it leaves alone what others wrote
        meanwhile (a health result, a host key approval). A deferred field loaded later
        counts as read, not as changed."""
        loaded = getattr(self, "_loaded_values", None)
        names = [f.attname for f in self._meta.concrete_fields if not f.primary_key]
        if self._state.adding or loaded is None:
            return names
        return [
            name
            for name in names
            if name in self.__dict__ and (name not in loaded or self.__dict__[name] != loaded[name])
        ]

    @property
    def agent_token(self) -> str:
        """Write-only: only the token's hash is stored, so there is nothing to read back."""
        return ""

    @agent_token.setter
    def agent_token(self, value: str) -> None:
        """Set (or with "" clear) the polling agent's token; a refused value is reported
        by clean() under `agent_token`, never quoted."""
        self._agent_token_problem = agent_tokens.token_problem(value)
        if self._agent_token_problem is None:
            self.agent_token_hash = agent_tokens.token_hash(value) if value else ""

    def give_secret(self, name: str, value: str) -> None:
        """Set the secret `name` as a write supplied it (even to its stored value): a
        secret given again may go where the same write sends it (see retargeted_secrets)."""
        setattr(self, name, value)
        self._secrets_given = {*getattr(self, "_secrets_given", ()), name}

    @staticmethod
    def secret_destinations(values: dict) -> dict[str, str]:
        """Where each secret goes, given the destination fields' values: the address the
        connector sends it to ('' when the connection method does not use it)."""
        target = Target(environment_id="", **{name: values[name] for name in DESTINATION_FIELDS})
        method = values["connection_method"]
        return {
            "password": f"ssh://{target.host}:{target.port}" if method == ConnectionMethod.SSH else "",
            "api_token": http_api.endpoint(target) if method == ConnectionMethod.HTTP_API else "",
            "webhook_secret": webhook.endpoint(target) if method == ConnectionMethod.WEBHOOK else "",
        }

    def retargeted_secrets(self) -> dict[str, list[str]]:
        """The stored secrets this unsaved change would send to a new address without
        having been given again, each with the destination fields that changed."""
        loaded = getattr(self, "_loaded_values", None)
        if self._state.adding or not loaded:
            return {}
        now = {name: getattr(self, name) for name in DESTINATION_FIELDS}
        before = {name: loaded.get(name, value) for name, value in now.items()}
        old, new = self.secret_destinations(before), self.secret_destinations(now)
        given = getattr(self, "_secrets_given", set())
        changed = [name for name in DESTINATION_FIELDS if now[name] != before[name]]
        return {
            name: changed
            for name in SECRET_FIELDS
            if new[name]
            and new[name] != old[name]
            and loaded.get(name)  # a secret was stored
            and name not in given
            and self.__dict__.get(name) == loaded.get(name)  # and is still the stored one
        }

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name, changed in self.retargeted_secrets().items():
            errors[name] = (
                f"{', '.join(changed)} changed: give the {name} again in the same change, or clear it "
                f"(a stored {name} is never sent to a new address)."
            )
        errors.update(self._agent_token_errors())
        if self.connection_method == ConnectionMethod.SSH:
            if not self.host:
                errors["host"] = "SSH environments need a host."
            if not self.username:
                errors["username"] = "SSH environments need a username."
            if not self.ssh_key_path and not self.password:
                errors["ssh_key_path"] = "SSH environments need ssh_key_path or password."
        elif self.connection_method == ConnectionMethod.HTTP_API:
            if not self.api_token:
                errors["api_token"] = "HTTP API environments need an api_token."  # noqa: S105 (a message)
            if not self.api_endpoint and not self.host:
                errors["host"] = "HTTP API environments need a host or an api_endpoint."
        elif self.connection_method == ConnectionMethod.WEBHOOK:
            if not self.webhook_url and not self.host:
                errors["host"] = "Webhook environments need a host or a webhook_url."
            if not self.webhook_secret:
                # Unsigned, anyone who can reach the agent could make it run the script.
                errors["webhook_secret"] = "Webhook environments need a webhook_secret to sign deliveries."  # noqa: S105
        if errors:
            raise ValidationError(errors)

    def _agent_token_errors(self) -> dict[str, str]:
        problem = getattr(self, "_agent_token_problem", None)
        if problem:
            return {AGENT_TOKEN: problem}
        if (
            self.agent_token_hash
            and RemoteEnvironment.objects.filter(agent_token_hash=self.agent_token_hash).exclude(pk=self.pk).exists()
        ):
            return {AGENT_TOKEN: "is the token of another environment: give each agent its own"}
        return {}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.host else ""


class SettingsBlock(models.Model):
    """One of the config file's settings blocks (`default_settings`, `ssh_settings`,
    `deployment_settings`, `notification_settings`), as last imported."""

    class Name(models.TextChoices):
        DEFAULT = "default_settings"
        SSH = "ssh_settings"
        DEPLOYMENT = "deployment_settings"
        NOTIFICATION = "notification_settings"

    name = models.CharField(max_length=40, choices=Name.choices, unique=True)
    values = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class HealthChange(models.Model):
    """Append-only: an environment's health went from one state to another."""

    environment = models.ForeignKey(RemoteEnvironment, on_delete=models.CASCADE, related_name="health_changes")
    old_health = models.CharField(max_length=20, choices=Health.choices)
    new_health = models.CharField(max_length=20, choices=Health.choices)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["environment", "-created_at"], name="healthchange_env_recent")]

    def __str__(self) -> str:
        return f"{self.environment_id}: {self.old_health} → {self.new_health}"
