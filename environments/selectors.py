"""Reads of environments that more than one caller needs: which environments a deployment
or a check takes."""

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from environments.models import SECRET_FIELDS, RemoteEnvironment


def _invalid(message: str) -> ValidationError:
    return ValidationError({"environments": [message]})


def _without_secrets() -> QuerySet[RemoteEnvironment]:
    # Choosing environments reads no secret; whoever connects loads its target again.
    return RemoteEnvironment.objects.defer(*SECRET_FIELDS)


def environments_enabled() -> QuerySet[RemoteEnvironment]:
    """The environments a deployment may take: the enabled ones, by id, without secrets."""
    return _without_secrets().filter(enabled=True).order_by("environment_id")


def environments_for_deployment(*, environment_ids: list[str] | None = None) -> list[RemoteEnvironment]:
    """The environments a deployment (or an on-demand check) takes: every enabled one
    when `environment_ids` is None, else the named ones, in the given order, each once.

    Raises ValidationError (field `environments`) when there is no enabled environment,
    when the list is empty, or when it names an unknown or a disabled environment. The
    secrets are not loaded (nor decrypted)."""
    if environment_ids is None:
        environments = list(environments_enabled())
        if not environments:
            raise _invalid("there is no enabled environment to deploy to")
        return environments
    if not environment_ids:
        raise _invalid("name at least one environment")
    wanted = list(dict.fromkeys(environment_ids))
    found = {env.environment_id: env for env in _without_secrets().filter(environment_id__in=wanted)}
    unknown = [env_id for env_id in wanted if env_id not in found]
    if unknown:
        raise _invalid(f"unknown environment(s): {', '.join(unknown)}")
    disabled = [env_id for env_id in wanted if not found[env_id].enabled]
    if disabled:
        raise _invalid(f"disabled environment(s): {', '.join(disabled)}")
    return [found[env_id] for env_id in wanted]


def environments_for_scheduled_health_check() -> list[RemoteEnvironment]:
    """What the scheduled health check looks at: every enabled environment that has a
    health_check_url (the check reads no secret)."""
    return list(_without_secrets().filter(enabled=True).exclude(health_check_url=""))
