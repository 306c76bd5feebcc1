"""The fleet at a glance, for the control room: how many environments are in each health
and under each tag, which need attention first (unhealthy, or their last run failed), and
the marks that move whenever something the dashboard shows changes. Each a constant number
of small queries, whatever the number of environments and coordinations."""

from dataclasses import dataclass, field

from django.db.models import Count, Max, Q, Subquery
from django_q.models import Task

from deployments.models import COORDINATION_ACTIVE, Coordination, StageEvent
from deployments.selectors import ATTENTION_OUTCOMES, last_ended_target
from environments.models import ConnectionMethod, Health, HealthChange, RemoteEnvironment
from environments.services import CHECK_TASK_GROUP

FAILED_OUTCOMES = frozenset(ATTENTION_OUTCOMES)


@dataclass
class TagCounts:
    """The environments under one tag, by health."""

    tag: str
    total: int = 0
    healthy: int = 0
    unhealthy: int = 0
    unknown: int = 0


@dataclass
class FleetOverview:
    """Counts of the whole fleet, and the environments in the order the dashboard shows
    them: unhealthy first, then those whose last run failed, then the rest (each group by
    environment id)."""

    total: int = 0
    enabled: int = 0
    by_health: dict[str, int] = field(default_factory=lambda: {health.value: 0 for health in Health})
    failing: int = 0
    attention: int = 0
    by_tag: list[TagCounts] = field(default_factory=list)
    ordered_pks: list[int] = field(default_factory=list)

    @property
    def disabled(self) -> int:
        return self.total - self.enabled


def _rank(health: str, last_status: str | None) -> int:
    if health == Health.UNHEALTHY:
        return 0
    if last_status in FAILED_OUTCOMES:
        return 1
    return 2


def fleet_overview() -> FleetOverview:
    """One query: each environment's health, tags, enabled flag and the outcome of its last
    ended run (index target_environment_recent)."""
    last_status = last_ended_target().values("status")[:1]
    rows = (
        RemoteEnvironment.objects.annotate(last_status=Subquery(last_status))
        .order_by("environment_id")
        .values_list("pk", "last_health", "enabled", "tags", "last_status")
    )
    overview = FleetOverview()
    tags: dict[str, TagCounts] = {}
    ranked: list[tuple[int, int]] = []
    for position, (pk, health, enabled, environment_tags, status) in enumerate(rows):
        overview.total += 1
        overview.enabled += bool(enabled)
        overview.by_health[health] = overview.by_health.get(health, 0) + 1
        overview.failing += status in FAILED_OUTCOMES
        rank = _rank(health, status)
        overview.attention += rank < 2
        ranked.append((rank, position, pk))
        for tag in environment_tags or []:
            counts = tags.setdefault(tag, TagCounts(tag))
            counts.total += 1
            setattr(counts, health, getattr(counts, health, 0) + 1)
    overview.by_tag = [tags[tag] for tag in sorted(tags)]
    overview.ordered_pks = [pk for _, _, pk in sorted(ranked)]
    return overview


def control_room_marks() -> dict:
    """Figures that change whenever something the dashboard shows changes (but not its
    clock): every status change writes a StageEvent, every health flip a HealthChange, an
    edit of an environment its updated_at. Five small queries (maxima of indexed columns,
    counts of a few thousand rows)."""
    environments = RemoteEnvironment.objects.aggregate(
        count=Count("id"),
        updated=Max("updated_at"),
        polling=Count("id", filter=Q(connection_method=ConnectionMethod.POLLING)),
    )
    coordinations = Coordination.objects.aggregate(count=Count("id"), newest=Max("id"))
    checks = Task.objects.filter(group=CHECK_TASK_GROUP).aggregate(count=Count("id"), stopped=Max("stopped"))
    return {
        "events": StageEvent.objects.aggregate(newest=Max("id"))["newest"],
        "health_changes": HealthChange.objects.aggregate(newest=Max("id"))["newest"],
        "environments": (environments["count"], str(environments["updated"])),
        "polling": environments["polling"],
        "coordinations": (coordinations["count"], coordinations["newest"]),
        "active": Coordination.objects.filter(status__in=COORDINATION_ACTIVE).exists(),
        "checks": (checks["count"], str(checks["stopped"])),
    }
