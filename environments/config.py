"""The `remote_environments.json` config file format: validation and the settings blocks.

The file is `{"environments": [...]}` plus the optional blocks `default_settings`,
`ssh_settings`, `deployment_settings` and `notification_settings`. Validation collects
every problem, each naming the environment and the field, so one run of the import shows
all of them; nothing is written unless there are none.
"""

import math
import os
import stat
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from environments import bounds, rollout
from environments.connectors.base import ConnectorError
from environments.connectors.ssh_runs import check_run_directory
from environments.models import (
    SECRET_FIELDS,
    WRITE_ONLY_FIELDS,
    ConnectionMethod,
    RemoteEnvironment,
    SettingsBlock,
)
from powerautomation import json_input

# The largest config file read (the command, the admin's upload, the API's import body).
MAX_CONFIG_FILE_BYTES = 10 * 1024 * 1024
MAX_CONFIG_FILE_LABEL = "10 MiB"
# How much of a bad value an error message quotes.
SHOWN_CHARS = 200

# Fields of an environment entry in the file, with their JSON type.
STRING_FIELDS = (
    "environment_id",
    "environment_type",
    "connection_method",
    "host",
    "username",
    "ssh_key_path",
    "password",
    "api_token",
    "webhook_secret",
    "api_endpoint",
    "webhook_url",
    "init_script_path",
    "working_directory",
    "health_check_url",
    "description",
    "host_key",
    "agent_token",
)
INTEGER_FIELDS = ("port", "timeout", "poll_interval")
BOOLEAN_FIELDS = ("enabled",)
# true, false or null (null: follow the settings block, e.g. ssh_settings.detach).
NULLABLE_BOOLEAN_FIELDS = ("detach",)
# A list of labels; its rule (environments/tags.py) is the model's validator, so a wrong
# type is reported with the rest of the entry's problems, naming `environments[i].tags`.
LIST_FIELDS = ("tags",)
ENVIRONMENT_FIELDS = STRING_FIELDS + INTEGER_FIELDS + BOOLEAN_FIELDS + NULLABLE_BOOLEAN_FIELDS + LIST_FIELDS
# Fields that are not part of the original file format or are write-only: when an entry
# leaves them out, the stored value is kept (an export without secrets can be re-imported,
# a host key an operator pinned survives the next import, and so do tags and detach set in
# the admin or the API when a file written before they existed is imported again).
STORED_AS = {"agent_token": "agent_token_hash"}
KEPT_WHEN_ABSENT = WRITE_ONLY_FIELDS + ("enabled", "host_key", "tags", "detach")


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _run_directory(value: Any) -> str | None:
    """Empty: the default (~/.powerautomation/runs); else the run supervisor's own rule."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return None
    try:
        check_run_directory(value)
    except (ValueError, ConnectorError) as exc:
        return str(exc)
    return None


def _log_level(value: Any) -> str | None:
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        return "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    return None


def _optional_http_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value and not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL, or empty"
    return None


# Numbers take their limits from environments.bounds, as the model's validators do.
BLOCK_SCHEMAS = {
    "default_settings": {
        "timeout": bounds.TIMEOUT.problem,
        "retry_count": bounds.RETRY_COUNT.problem,
        "retry_delay": bounds.RETRY_DELAY.problem,
        "health_check_timeout": bounds.HEALTH_CHECK_TIMEOUT.problem,
        "health_check_retries": bounds.HEALTH_CHECK_RETRIES.problem,
        # Seconds between the scheduled health checks (whole minutes, rounded up); unset:
        # HEALTH_CHECK_INTERVAL_MINUTES. The original file's global_settings.health_check_interval.
        "health_check_interval": bounds.HEALTH_CHECK_INTERVAL.problem,
    },
    "ssh_settings": {
        "default_key_path": _string,
        "connection_timeout": bounds.CONNECT_TIMEOUT.problem,
        "command_timeout": bounds.TIMEOUT.problem,
        # Detached runs (environments/connectors/ssh_runs.py): the script outlives the session.
        "detach": _boolean,
        "run_directory": _run_directory,
    },
    "deployment_settings": {
        "parallel_limit": bounds.PARALLEL_LIMIT.problem,
        "log_level": _log_level,
        "enable_health_check": _boolean,
        "auto_retry_on_failure": _boolean,
        # The rollout defaults (environments.rollout); a deployment may override each.
        **{key: (lambda value, key=key: rollout.problem(key, value)) for key in rollout.KEYS},
    },
    "notification_settings": {
        "enable_notifications": _boolean,
        "notification_webhook": _optional_http_url,
        "email_notifications": _boolean,
    },
}


# The original PowerAutomation file's names for settings that exist here under another
# name: an import moves each to today's name (and says so); an export writes today's.
ORIGINAL_NAMES = {
    ("global_settings", "max_concurrent_deployments"): ("deployment_settings", "parallel_limit"),
    ("global_settings", "default_timeout"): ("default_settings", "timeout"),
    ("global_settings", "retry_attempts"): ("default_settings", "retry_count"),
    ("global_settings", "health_check_interval"): ("default_settings", "health_check_interval"),
    ("notification_settings", "slack_webhook"): ("notification_settings", "notification_webhook"),
}
ORIGINAL_BLOCKS = ("global_settings",)
# The original's RemoteEnvironmentType values that are spelled differently here.
ORIGINAL_ENVIRONMENT_TYPES = {"docker_container": "docker"}


def translate_original_names(data: dict, errors: list[str], mapped: list[str], warnings: list[str]) -> dict:
    """A copy of the parsed file with the original names moved to today's. A value is
    checked under the name the file gives it; an old and a new name with different values
    is an error naming both. Returns the copy (the caller's data is left alone)."""
    data = {name: dict(block) if isinstance(block, dict) else block for name, block in data.items()}
    for block in ORIGINAL_BLOCKS:
        if block in data and not isinstance(data[block], dict):
            errors.append(f"{block}: must be an object")
            data.pop(block)
    for (old_block, old_key), (new_block, new_key) in ORIGINAL_NAMES.items():
        old = data.get(old_block)
        if not isinstance(old, dict) or old_key not in old:
            continue
        value = old.pop(old_key)
        problem = BLOCK_SCHEMAS[new_block][new_key](value)
        if problem:
            shown = "<hidden>" if (new_block, new_key) in SECRET_SETTINGS else repr(value)
            errors.append(f"{old_block}.{old_key}: {problem} (got {shown})")
            continue
        target = data.setdefault(new_block, {})
        if not isinstance(target, dict):
            continue  # reported as the block's own error
        if new_key in target and target[new_key] != value:
            errors.append(
                f"{old_block}.{old_key} and {new_block}.{new_key} are both given, with different values: keep one"
            )
            continue
        target[new_key] = value
        mapped.append(f"{old_block}.{old_key} → {new_block}.{new_key}")
    for block in ORIGINAL_BLOCKS:
        for key in data.pop(block, {}):
            warnings.append(f"{block}.{key}: unknown setting of the original format, ignored")
    return data


# Settings of the original file format that this platform validates but does not act on:
# an import warns about each one it finds, saying what governs that instead.
NOT_USED_SETTINGS = {
    ("ssh_settings", "command_timeout"): "each environment's timeout bounds its run",
    ("deployment_settings", "log_level"): "the LOG_LEVEL environment variable sets the platform's log level",
    ("notification_settings", "email_notifications"): (
        "the platform sends no email; notification_webhook receives the summaries"
    ),
}


# Settings that are credentials (a Slack incoming-webhook URL is one): shown masked to
# VIEWERs and in exports; an import that leaves one out, or brings back its mask, keeps it.
SECRET_SETTINGS = (("notification_settings", "notification_webhook"),)
MASK = "***"


def mask_url(url: str) -> str:
    """`scheme://host[:port]/***`: where it points, without the path and query that carry
    the credential (nor a user:password@)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/{MASK}"


def masked_blocks(blocks: dict[str, dict]) -> dict[str, dict]:
    """The settings blocks with every credential masked (mask_url)."""
    shown = {name: dict(values) for name, values in blocks.items()}
    for block, key in SECRET_SETTINGS:
        value = shown.get(block, {}).get(key)
        if isinstance(value, str) and value:
            shown[block][key] = mask_url(value)
    return shown


def _keep_stored_secret_settings(blocks: dict[str, dict], stored: dict[str, dict], errors: list[str]) -> None:
    """Left out of an imported block, or given as its mask, a credential keeps its stored
    value; a mask of anything else cannot be stored."""
    for block, key in SECRET_SETTINGS:
        if block not in blocks or not isinstance(blocks[block], dict):
            continue
        kept = stored.get(block, {}).get(key)
        value = blocks[block].get(key)
        if key not in blocks[block] or (kept and value == mask_url(kept)):
            if kept:
                blocks[block] = {**blocks[block], key: kept}
        elif isinstance(value, str) and value.endswith("/" + MASK):
            errors.append(
                f"{block}.{key}: a masked URL (from an export) keeps only the stored one it masks; "
                "give the full URL, or leave the key out to keep the stored one"
            )


class ConfigError(Exception):
    """The config file is invalid; `errors` lists every problem, each naming its place."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


class ConfigFileError(Exception):
    """The config file cannot be read as one: not a regular file, over the size limit, or
    not JSON the platform accepts (nesting, duplicate keys). The message says which."""


def read_config_file(path: str) -> Any:
    """The parsed config file at `path`. Only a regular file is read (a device such as
    /dev/zero or a FIFO would never end), and at most MAX_CONFIG_FILE_BYTES of it."""
    try:
        # Non-blocking: opening a FIFO must not wait for a writer before it is refused.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the file: {exc.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ConfigFileError(f"{path}: not a regular file (only a regular file is read as a config file)")
        try:
            raw = handle.read(MAX_CONFIG_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigFileError(f"{path}: cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_CONFIG_FILE_LABEL}, the limit for a config file")
    try:
        return parse_config(raw)
    except ConfigFileError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


def parse_config(raw: bytes) -> Any:
    """A config file's bytes as JSON, through the project's bounded reader."""
    try:
        return json_input.loads(raw)
    except json_input.JSONInputError as exc:
        raise ConfigFileError(str(exc)) from None


@dataclass
class ImportPlan:
    """What an import would do. Built without writing anything."""

    create: list[RemoteEnvironment] = field(default_factory=list)
    update: list[RemoteEnvironment] = field(default_factory=list)
    unchanged: list[RemoteEnvironment] = field(default_factory=list)
    delete: list[RemoteEnvironment] = field(default_factory=list)
    blocks: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # The original format's names moved to today's ("global_settings.x → deployment_settings.y").
    mapped: list[str] = field(default_factory=list)


CLAMPED_DEFAULTS = {
    "retry_count": bounds.RETRY_COUNT,
    "retry_delay": bounds.RETRY_DELAY,
    "health_check_timeout": bounds.HEALTH_CHECK_TIMEOUT,
    "health_check_retries": bounds.HEALTH_CHECK_RETRIES,
    "parallel_limit": bounds.PARALLEL_LIMIT,
    "connect_timeout": bounds.CONNECT_TIMEOUT,
    "default_timeout": bounds.TIMEOUT,
}


@dataclass(frozen=True)
class DeploymentDefaults:
    """The settings a coordination runs with: the config file's blocks over the platform's
    settings. Snapshotted into each coordination, so a run does not change under it."""

    retry_count: int = 2
    retry_delay: float = 5.0
    health_check_timeout: float = 10.0
    health_check_retries: int = 3
    enable_health_check: bool = True
    parallel_limit: int = 256
    connect_timeout: float = 10.0
    default_timeout: int = 300
    default_key_path: str = ""
    # SSH: run init scripts detached (an environment's own `detach` overrides it), their run
    # directories under run_directory ("": the supervisor's default, ~/.powerautomation/runs).
    detach: bool = True
    run_directory: str = ""

    def __post_init__(self) -> None:
        # Defence in depth: a stored block or snapshot that escaped validation cannot make
        # a wait overflow (timedelta, Event.wait) and fail the whole coordination.
        for name, bound in CLAMPED_DEFAULTS.items():
            value, fallback = getattr(self, name), type(self).__dataclass_fields__[name].default
            clamped = bound.clamp_int(value, fallback) if bound.integer else float(bound.clamp(value, fallback))
            object.__setattr__(self, name, clamped)
        if not isinstance(self.detach, bool):
            object.__setattr__(self, "detach", True)
        if _run_directory(self.run_directory):
            object.__setattr__(self, "run_directory", "")

    @classmethod
    def from_blocks(cls, blocks: dict[str, dict]) -> "DeploymentDefaults":
        default = blocks.get("default_settings", {})
        ssh = blocks.get("ssh_settings", {})
        deployment = blocks.get("deployment_settings", {})
        retry_count = default.get("retry_count", cls.retry_count)
        if deployment.get("auto_retry_on_failure") is False:
            retry_count = 0
        return cls(
            retry_count=retry_count,
            # Not float(): a stored 10**400 or "abc" must reach the clamp, not raise here.
            retry_delay=default.get("retry_delay", cls.retry_delay),
            health_check_timeout=default.get("health_check_timeout", cls.health_check_timeout),
            health_check_retries=default.get("health_check_retries", cls.health_check_retries),
            enable_health_check=deployment.get("enable_health_check", True),
            parallel_limit=deployment.get("parallel_limit", settings.DEPLOYMENT_PARALLEL_LIMIT),
            connect_timeout=ssh.get("connection_timeout", settings.SSH_CONNECT_TIMEOUT),
            default_timeout=default.get("timeout", cls.default_timeout),
            default_key_path=ssh.get("default_key_path", ""),
            detach=ssh.get("detach", True),
            run_directory=ssh.get("run_directory", ""),
        )

    @classmethod
    def from_json(cls, data: dict) -> "DeploymentDefaults":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def as_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def detach_for(self, override: bool | None) -> bool:
        """Whether an SSH run is detached: the environment's own `detach`, else ssh_settings'."""
        return self.detach if override is None else override


def stored_blocks() -> dict[str, dict]:
    return {block.name: block.values for block in SettingsBlock.objects.all()}


def health_check_minutes() -> int:
    """The scheduled health checks' interval in minutes: default_settings.health_check_interval
    (seconds, rounded up to whole minutes, the schedule's step) when the config file set it,
    else HEALTH_CHECK_INTERVAL_MINUTES."""
    values = SettingsBlock.objects.filter(name="default_settings").values_list("values", flat=True).first() or {}
    seconds = values.get("health_check_interval")
    if bounds.HEALTH_CHECK_INTERVAL.problem(seconds) is None:
        return max(1, math.ceil(seconds / 60))
    return settings.HEALTH_CHECK_INTERVAL_MINUTES


def current_defaults() -> DeploymentDefaults:
    return DeploymentDefaults.from_blocks(stored_blocks())


def current_rollout() -> rollout.Rollout:
    """The rollout defaults: deployment_settings' rollout keys, else one wave, no budget."""
    block = SettingsBlock.objects.filter(name="deployment_settings").values_list("values", flat=True).first()
    return rollout.Rollout.from_settings(block if isinstance(block, dict) else {})


def rollout_for(overrides: dict | None) -> rollout.Rollout:
    """The rollout a deployment runs: the defaults, with `overrides` (a deployment's own
    settings) over them key by key. Raises ValidationError naming `rollout.<key>`."""
    return rollout.Rollout.from_json(overrides, base=current_rollout())


def settings_block_problems(name: str, values: Any) -> list[str]:
    """What is wrong with one settings block as the admin edits it, by the config file's
    rules (names, types, bounds); empty when it may be saved."""
    if name not in BLOCK_SCHEMAS:
        return [f"{name!r} is not a settings block; known blocks: {', '.join(BLOCK_SCHEMAS)}"]
    errors: list[str] = []
    _validate_blocks({name: values}, errors, [])
    return errors


def _shown(value: Any) -> str:
    """A bad value as an error message quotes it: at most SHOWN_CHARS of it."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def _validate_blocks(data: dict, errors: list[str], warnings: list[str]) -> dict[str, dict]:
    blocks: dict[str, dict] = {}
    for name, schema in BLOCK_SCHEMAS.items():
        if name not in data:
            continue
        block = data[name]
        if not isinstance(block, dict):
            errors.append(f"{name}: must be an object")
            continue
        for key, value in block.items():
            check = schema.get(key)
            if check is None:
                warnings.append(f"{name}.{key}: unknown setting, stored but not used")
                continue
            problem = check(value)
            if problem:
                errors.append(f"{name}.{key}: {problem} (got {_shown(value)})")
            elif (name, key) in NOT_USED_SETTINGS:
                warnings.append(f"{name}.{key}: stored but not used ({NOT_USED_SETTINGS[name, key]})")
        blocks[name] = block
    return blocks


def _entry_label(index: int, entry: Any) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("environment_id"), str) and entry["environment_id"]:
        return f"environments[{index}] ({entry['environment_id']})"
    return f"environments[{index}]"


def _check_types(entry: dict, label: str, errors: list[str]) -> bool:
    ok = True
    for key, value in entry.items():
        if key in STRING_FIELDS and not isinstance(value, str):
            problem = "must be a string"
        elif key in INTEGER_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
            problem = "must be a whole number"
        elif key in BOOLEAN_FIELDS and not isinstance(value, bool):
            problem = "must be true or false"
        elif key in NULLABLE_BOOLEAN_FIELDS and value is not None and not isinstance(value, bool):
            problem = "must be true, false or null"
        else:
            continue
        ok = False
        # Secrets are never echoed, not even when they are the wrong type.
        shown = "<hidden>" if key in WRITE_ONLY_FIELDS else repr(value)
        errors.append(f"{label}.{key}: {problem} (got {shown})")
    return ok


def apply_entry(environment: RemoteEnvironment, entry: dict, defaults: DeploymentDefaults, creating: bool) -> None:
    for name in ENVIRONMENT_FIELDS:
        if name in SECRET_FIELDS and name in entry:
            environment.give_secret(name, entry[name])
        elif name in entry:
            setattr(environment, name, entry[name])
        elif name in KEPT_WHEN_ABSENT and not creating:
            continue
        elif name not in ("environment_id", "agent_token"):
            model_field = RemoteEnvironment._meta.get_field(name)
            setattr(environment, name, model_field.get_default())
    if "timeout" not in entry:
        environment.timeout = defaults.default_timeout
    if (
        environment.connection_method == ConnectionMethod.SSH
        and not environment.ssh_key_path
        and not environment.password
        and defaults.default_key_path
    ):
        environment.ssh_key_path = defaults.default_key_path


def _field_values(environment: RemoteEnvironment) -> dict:
    # An agent token is write-only: what changes is its hash.
    return {name: getattr(environment, STORED_AS.get(name, name)) for name in ENVIRONMENT_FIELDS}


def plan_import(data: Any, *, prune: bool = False) -> ImportPlan:
    """Validate a parsed config file and work out what importing it changes.

    Raises ConfigError listing every problem; returns the plan when there is none.
    """
    errors: list[str] = []
    plan = ImportPlan()
    if not isinstance(data, dict):
        raise ConfigError(["the file must hold a JSON object with an 'environments' list"])
    data = translate_original_names(data, errors, plan.mapped, plan.warnings)
    for key in data:
        if key != "environments" and key not in BLOCK_SCHEMAS:
            plan.warnings.append(f"{key}: unknown top-level key, ignored")
    entries = data.get("environments")
    if not isinstance(entries, list):
        raise ConfigError(["environments: must be a list of environment objects"])

    stored = stored_blocks()
    plan.blocks = _validate_blocks(data, errors, plan.warnings)
    _keep_stored_secret_settings(plan.blocks, stored, errors)
    defaults = DeploymentDefaults()
    if not errors:
        defaults = DeploymentDefaults.from_blocks({**stored, **plan.blocks})

    existing = {env.environment_id: env for env in RemoteEnvironment.objects.all()}
    seen: set[str] = set()
    agent_tokens_seen: set[str] = set()
    for index, entry in enumerate(entries):
        label = _entry_label(index, entry)
        if not isinstance(entry, dict):
            errors.append(f"{label}: must be an object")
            continue
        original_type = entry.get("environment_type")
        if isinstance(original_type, str) and original_type in ORIGINAL_ENVIRONMENT_TYPES:
            entry = {**entry, "environment_type": ORIGINAL_ENVIRONMENT_TYPES[original_type]}
            plan.mapped.append(f"{label}.environment_type {original_type} → {entry['environment_type']}")
        for key in entry:
            if key not in ENVIRONMENT_FIELDS:
                plan.warnings.append(f"{label}.{key}: unknown field, ignored")
        if not _check_types(entry, label, errors):
            continue
        environment_id = entry.get("environment_id")
        if not environment_id:
            errors.append(f"{label}.environment_id: required")
            continue
        if environment_id in seen:
            errors.append(f"{label}.environment_id: {environment_id!r} appears more than once in the file")
            continue
        seen.add(environment_id)

        current = existing.get(environment_id)
        environment = RemoteEnvironment() if current is None else current
        before = None if current is None else _field_values(current)
        apply_entry(environment, entry, defaults, creating=current is None)
        try:
            environment.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                place = label if field_name == "__all__" else f"{label}.{field_name}"
                errors.extend(f"{place}: {message}" for message in messages)
            continue
        if environment.agent_token_hash in agent_tokens_seen:
            errors.append(f"{label}.agent_token: is the token of another environment in this file: give each its own")
            continue
        if environment.agent_token_hash:
            agent_tokens_seen.add(environment.agent_token_hash)
        if current is None:
            plan.create.append(environment)
        elif _field_values(environment) != before:
            plan.update.append(environment)
        else:
            plan.unchanged.append(environment)

    if errors:
        raise ConfigError(errors)
    if prune:
        plan.delete = [env for env_id, env in existing.items() if env_id not in seen]
    return plan


def export_config(*, include_secrets: bool = False) -> dict:
    """The stored environments and blocks in the config file format; without
    `include_secrets`, no secret and every credential setting masked (mask_url)."""
    environments = []
    for environment in RemoteEnvironment.objects.order_by("environment_id"):
        entry: dict[str, Any] = {}
        for name in ENVIRONMENT_FIELDS:
            value = getattr(environment, name)
            if (name in SECRET_FIELDS and not include_secrets) or name == "agent_token":
                continue  # an agent token is not stored: only its hash
            if value in ("", None) and name not in ("environment_id",):
                continue
            entry[name] = value
        environments.append(entry)
    data: dict[str, Any] = {"environments": environments}
    data.update(stored_blocks() if include_secrets else masked_blocks(stored_blocks()))
    return data
