"""Reads of environments that more than one caller needs: which environments a deployment
or a check takes."""

from collections.abc import Iterable
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db.models import Count, DurationField, ExpressionWrapper, IntegerField, Q, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone

from environments import tags as tag_rules
from environments.connectors.polling import ONLINE_INTERVALS
from environments.models import SECRET_FIELDS, ConnectionMethod, RemoteEnvironment


def _invalid(message: str, field: str = "environments") -> ValidationError:
    return ValidationError({field: [message]})


def _without_secrets() -> QuerySet[RemoteEnvironment]:
    # Choosing environments reads no secret; whoever connects loads its target again.
    return RemoteEnvironment.objects.defer(*SECRET_FIELDS)


def environments_enabled() -> QuerySet[RemoteEnvironment]:
    """The environments a deployment may take: the enabled ones, by id, without secrets."""
    return _without_secrets().filter(enabled=True).order_by("environment_id")


def _tagged_pks(queryset: QuerySet[RemoteEnvironment], tags: Iterable[str]) -> list[int]:
    wanted = set(tags)
    return [
        pk
        for pk, labels in queryset.values_list("pk", "tags")
        if isinstance(labels, list) and not wanted.isdisjoint(labels)
    ]


def environments_tagged(queryset: QuerySet[RemoteEnvironment], *, tags: Iterable[str]) -> QuerySet[RemoteEnvironment]:
    """The environments of `queryset` that have ANY of `tags`: the one tag filter of the
    deployment selection, the API's `?tag=` and the admin's list filter and search.

    JSONField's `contains` is not supported on SQLite, so this reads the candidates'
    (pk, tags) and filters by pk: one narrow query, fine at fleet sizes of thousands of
    environments, and the same on SQLite and PostgreSQL."""
    return queryset.filter(pk__in=_tagged_pks(queryset, tags))


def tags_in_use() -> list[str]:
    """Every tag some environment (enabled or not) has, sorted."""
    used: set[str] = set()
    for labels in RemoteEnvironment.objects.values_list("tags", flat=True):
        if isinstance(labels, list):
            used.update(label for label in labels if isinstance(label, str))
    return sorted(used)


def _checked_tags(tags: list[str], field: str, known: set[str]) -> None:
    """A label of the wrong shape, or that no environment has, is bad input naming it (a
    typo must not quietly select nothing, or everything but the flaky ones)."""
    malformed = [tag for tag in tags if not tag_rules.is_tag(tag)]
    if malformed:
        raise _invalid(f"{tag_rules.shown(malformed[0])} is not a tag: {tag_rules.TAG_HINT}", field)
    unknown = [tag for tag in dict.fromkeys(tags) if tag not in known]
    if unknown:
        raise _invalid(f"unknown tag(s): {', '.join(unknown)} (no environment has them)", field)


def _named_environments(environment_ids: list[str]) -> list[RemoteEnvironment]:
    """The named environments, in the given order, each once; each must exist and be
    enabled."""
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


def environments_for_deployment(
    *,
    environment_ids: list[str] | None = None,
    tags: list[str] | None = None,
    exclude_tags: list[str] | None = None,
) -> list[RemoteEnvironment]:
    """The environments a deployment (or an on-demand check) takes.

    1. The named environments (`environment_ids`, in the given order, each once; each must
       exist and be enabled), then the enabled environments that have ANY of `tags`, by id.
       Neither given: every enabled environment, by id.
    2. Less every environment that has ANY of `exclude_tags`, named ones included.

    Raises ValidationError naming the field, `environments`, `tags` or `exclude_tags`: an
    empty list of names or of tags (an empty shell variable must not mean "everything"), an
    unknown or disabled name, a tag of the wrong shape or that no environment has, or a
    selection that ends empty (the message says why). The secrets are not loaded (nor
    decrypted)."""
    if tags is not None and not tags:
        raise _invalid("name at least one tag", "tags")
    if tags or exclude_tags:
        known = set(tags_in_use())
        _checked_tags(tags or [], "tags", known)
        _checked_tags(exclude_tags or [], "exclude_tags", known)
    selected = [] if environment_ids is None else _named_environments(environment_ids)
    if tags:
        named = {env.pk for env in selected}
        selected += [env for env in environments_tagged(environments_enabled(), tags=tags) if env.pk not in named]
        if not selected:
            raise _invalid(f"no enabled environment has any of the tags: {', '.join(tags)}", "tags")
    elif environment_ids is None:
        selected = list(environments_enabled())
        if not selected:
            raise _invalid("there is no enabled environment to deploy to")
    if not exclude_tags:
        return selected
    excluded = set(_tagged_pks(RemoteEnvironment.objects.all(), exclude_tags))
    remaining = [env for env in selected if env.pk not in excluded]
    if not remaining:
        field = "tags" if tags else ("environments" if environment_ids is not None else "exclude_tags")
        raise _invalid(
            f"nothing left to deploy to: every selected environment has one of the excluded tags "
            f"({', '.join(exclude_tags)})",
            field,
        )
    return remaining


def environments_for_scheduled_health_check() -> list[RemoteEnvironment]:
    """What the scheduled health check looks at: every enabled environment that has a
    health_check_url (the check reads no secret)."""
    return list(_without_secrets().filter(enabled=True).exclude(health_check_url=""))


# --- Counts for the metrics: one aggregate query each, whatever the number of rows --------


def environment_health_counts() -> list[tuple[str, bool, int]]:
    """(health, enabled, how many environments) for every pair that has any."""
    rows = RemoteEnvironment.objects.order_by().values_list("last_health", "enabled").annotate(count=Count("pk"))
    return [(health, enabled, count) for health, enabled, count in rows]


def _agent_online() -> Q:
    """The database's side of connectors.polling.is_online: the agent asked for work within
    ONLINE_INTERVALS of its environment's poll interval."""
    # Cast: SQLite multiplies a duration only by a plain IntegerField.
    interval = Cast("poll_interval", IntegerField())
    window = ExpressionWrapper(interval * timedelta(seconds=ONLINE_INTERVALS), output_field=DurationField())
    return Q(agent_seen_at__gte=timezone.now() - window)


def polling_agent_counts() -> dict[str, int]:
    """How many enabled polling environments there are, and how many of their agents are online."""
    return RemoteEnvironment.objects.filter(connection_method=ConnectionMethod.POLLING, enabled=True).aggregate(
        environments=Count("pk"), online=Count("pk", filter=_agent_online())
    )
