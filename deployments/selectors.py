"""Reads of deployments, shaped for the commands, the API and the admin."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django_q.models import Task

from deployments.models import (
    COORDINATION_ACTIVE,
    COORDINATION_TERMINAL,
    TARGET_ACTIVE,
    TARGET_TERMINAL,
    Coordination,
    CoordinationStatus,
    CoordinationTarget,
    Stage,
    StageEvent,
    TargetStatus,
)
from environments.models import SECRET_FIELDS, Health, RemoteEnvironment
from environments.services import CHECK_TASK_GROUP


def coordination_finished(coordination: Coordination, *, targets: Iterable[CoordinationTarget] | None = None) -> bool:
    """The coordination and every environment in it have ended: no event can follow. A
    cancelled coordination is terminal while the environments it hangs up still end, so
    its status alone does not say it. `targets`, when the caller has them loaded, saves
    the query."""
    if coordination.status not in COORDINATION_TERMINAL:
        return False
    if targets is not None:
        return not any(target.status in TARGET_ACTIVE for target in targets)
    return not coordination.targets.filter(status__in=TARGET_ACTIVE).exists()


def coordinations_finished_entirely() -> QuerySet[Coordination]:
    """The coordinations `coordination_finished` holds for, as one query: ended, and no
    environment in them still running (what history retention may delete)."""
    still_running = CoordinationTarget.objects.filter(coordination=OuterRef("pk"), status__in=TARGET_ACTIVE)
    return Coordination.objects.filter(status__in=COORDINATION_TERMINAL).exclude(Exists(still_running))


# --- One run per machine: a coordination holds an environment while its target there has
# not ended. The database's one_run_per_environment constraint stops two runs at once;
# these reads decide who waits, and who goes first (the oldest coordination never waits).


def environments_busy(environment_pks: Iterable[int]) -> dict[str, tuple[str, list[int]]]:
    """The environments a coordination holds: environment id → (the coordination holding
    it, the pks of every unended target on it), oldest first."""
    busy: dict[str, tuple[str, list[int]]] = {}
    rows = (
        CoordinationTarget.objects.filter(
            remote_environment_id__in=list(environment_pks), coordination__status__in=COORDINATION_ACTIVE
        )
        .exclude(status__in=TARGET_TERMINAL)
        .order_by("pk")
        .values_list("pk", "environment_id", "coordination__coordination_id")
    )
    for pk, environment_id, holder in rows:
        busy.setdefault(environment_id, (holder, []))[1].append(pk)
    return busy


def targets_waiting(targets: Iterable[CoordinationTarget]) -> dict[int, str]:
    """Of pending targets of one coordination, those that must wait, each with the
    coordination it waits for: another coordination's target on the same environment is
    running, or belongs to an older coordination (a lower pk: one order for every machine,
    so two coordinations never wait for each other) and has not ended."""
    targets = [target for target in targets if target.remote_environment_id is not None]
    if not targets:
        return {}
    coordination_pk = targets[0].coordination_id
    others: dict[int, list[tuple[int, str, str]]] = {}  # environment → (coordination pk, status, id)
    rows = (
        CoordinationTarget.objects.filter(
            remote_environment_id__in={target.remote_environment_id for target in targets},
            # A target left unended in an ended coordination (a bug, a hand edit) holds nothing.
            coordination__status__in=COORDINATION_ACTIVE,
        )
        .exclude(status__in=TARGET_TERMINAL)
        .exclude(coordination_id=coordination_pk)
        .order_by("coordination_id", "pk")
        .values_list("remote_environment_id", "coordination_id", "status", "coordination__coordination_id")
    )
    for environment_pk, other_pk, status, holder in rows:
        others.setdefault(environment_pk, []).append((other_pk, status, holder))
    waiting = {}
    for target in targets:
        for other_pk, status, holder in others.get(target.remote_environment_id or 0, []):
            if status in TARGET_ACTIVE or other_pk < coordination_pk:
                waiting[target.pk] = holder
                break
    return waiting


def coordinations_active() -> QuerySet[Coordination]:
    return Coordination.objects.filter(status__in=COORDINATION_ACTIVE).select_related("triggered_by_user")


def coordinations_finished() -> QuerySet[Coordination]:
    # "Not active" rather than "status in terminal": the same rows, but SQLite (no
    # statistics) would take the status index for an IN and sort every finished
    # coordination for one page; a NOT IN leaves it walking coordination_recent in order
    # and stopping after the page. PostgreSQL picks that plan either way.
    return (
        Coordination.objects.exclude(status__in=COORDINATION_ACTIVE)
        .select_related("triggered_by_user")
        .order_by("-created_at", "-id")
    )


# --- The API's reads: a constant number of queries whatever the number of rows -------------

# Target columns a list shows; the output tail (up to 64 KiB each) only in full records.
TARGET_SUMMARY_FIELDS = (
    "id",
    "coordination",
    "environment_id",
    "status",
    "reason",
    "exit_code",
    "finished_at",
    "wave",
    "waiting_for",
)


# How far a coordination is: every target counts in exactly one bucket; `done` is the
# ones that have ended. The API, the admin and the notifications all count by this table.
PROGRESS_BUCKETS = {
    "succeeded": (TargetStatus.SUCCEEDED,),
    "failed": (TargetStatus.FAILED, TargetStatus.INTERRUPTED),
    "cancelled": (TargetStatus.CANCELLED,),
    "running": (TargetStatus.TRIGGERING, TargetStatus.RUNNING),
    "pending": (TargetStatus.PENDING,),
}
_BUCKET_OF: dict[str, str] = {status: bucket for bucket, statuses in PROGRESS_BUCKETS.items() for status in statuses}
DONE_BUCKETS = ("succeeded", "failed", "cancelled")


def _progress(total: int, buckets: dict[str, int]) -> dict[str, int]:
    return {"total": total, "done": sum(buckets[name] for name in DONE_BUCKETS), **buckets}


def target_progress(targets: Iterable[CoordinationTarget]) -> dict[str, int]:
    """The progress of loaded targets: total, done, and one count per bucket."""
    buckets = dict.fromkeys(PROGRESS_BUCKETS, 0)
    total = 0
    for target in targets:
        total += 1
        buckets[_BUCKET_OF[target.status]] += 1
    return _progress(total, buckets)


def _bucket_counts(prefix: str = "") -> dict:
    return {
        f"{prefix}{bucket}": Count("targets", filter=Q(targets__status__in=statuses))
        for bucket, statuses in PROGRESS_BUCKETS.items()
    }


def _counted_per_row(prefix: str) -> dict:
    """The same counts as `_bucket_counts`, as subqueries: the database counts only the
    rows a page returns, where a GROUP BY over the join counts every coordination of a long
    history before the page is cut (SQLite does)."""

    def count(statuses=None):
        targets = CoordinationTarget.objects.filter(coordination=OuterRef("pk"))
        if statuses is not None:
            targets = targets.filter(status__in=statuses)
        counted = targets.order_by().values("coordination").annotate(n=Count("pk")).values("n")
        return Coalesce(Subquery(counted), Value(0))

    return {
        f"{prefix}total": count(),
        **{f"{prefix}{bucket}": count(statuses) for bucket, statuses in PROGRESS_BUCKETS.items()},
    }


# Which of a coordination's targets a bounded answer shows first: those that need someone's
# attention (failed), then those under way, then the rest; succeeded last.
ATTENTION_ORDER = (
    (TargetStatus.FAILED, TargetStatus.INTERRUPTED),
    (TargetStatus.TRIGGERING, TargetStatus.RUNNING),
    (TargetStatus.PENDING,),
    (TargetStatus.CANCELLED,),
)


def _targets(queryset: QuerySet[CoordinationTarget], limit: int | None) -> QuerySet[CoordinationTarget]:
    """Every target by environment_id, or (with `limit`) the `limit` that come first in
    ATTENTION_ORDER: a sliced prefetch, one query (a window function) for a whole page."""
    if limit is None:
        return queryset.order_by("environment_id")
    rank = Case(
        *(When(status__in=statuses, then=Value(position)) for position, statuses in enumerate(ATTENTION_ORDER)),
        default=Value(len(ATTENTION_ORDER)),
        output_field=IntegerField(),
    )
    return queryset.annotate(attention=rank).order_by("attention", "environment_id")[:limit]


SHOWN_TARGETS = "shown_targets"


def _bounded(queryset: QuerySet[Coordination], targets: QuerySet[CoordinationTarget], limit: int | None):
    queryset = queryset.select_related("triggered_by_user", "approved_by", "retry_of")
    if limit is None:
        return queryset.prefetch_related(Prefetch("targets", queryset=_targets(targets, limit)))
    # A slice goes to its own attribute (Django prefetches a slice only so), and the
    # progress cannot be counted from it: the database counts it.
    queryset = queryset.annotate(**_counted_per_row("progress_"))
    return queryset.prefetch_related(Prefetch("targets", queryset=_targets(targets, limit), to_attr=SHOWN_TARGETS))


def coordinations_listed(
    queryset: QuerySet[Coordination], *, targets_limit: int | None = None
) -> QuerySet[Coordination]:
    """`queryset` with what a list shows: users, retry link and target summaries (every
    target, or the `targets_limit` that need attention most), in two queries whatever its
    length."""
    return _bounded(queryset, CoordinationTarget.objects.only(*TARGET_SUMMARY_FIELDS), targets_limit)


def coordination_detail(coordination_id: str, *, targets_limit: int | None = None) -> Coordination | None:
    """One coordination with every target in full (or the `targets_limit` that need
    attention most), or None."""
    return _bounded(
        Coordination.objects.filter(coordination_id=coordination_id), CoordinationTarget.objects.all(), targets_limit
    ).first()


def targets_shown(coordination: Coordination) -> list[CoordinationTarget]:
    """The targets loaded with it (all, or the bounded few), by environment_id."""
    loaded = getattr(coordination, SHOWN_TARGETS, None)
    if loaded is None:
        loaded = coordination.targets.all()
    return sorted(loaded, key=lambda target: target.environment_id)


def coordination_progress(coordination: Coordination) -> dict[str, int]:
    """Its progress: counted by the database when its targets were loaded bounded, else
    from them."""
    if hasattr(coordination, "progress_total"):
        return annotated_progress(coordination)
    return target_progress(coordination.targets.all())


def coordination_targets(coordination: Coordination) -> QuerySet[CoordinationTarget]:
    """Its targets, to page through (by environment_id)."""
    return CoordinationTarget.objects.filter(coordination=coordination)


def coordination_target(*, coordination_id: str, environment_id: str) -> CoordinationTarget:
    """One environment's run in a coordination (404 when there is none)."""
    return get_object_or_404(
        CoordinationTarget.objects.select_related("coordination"),
        coordination__coordination_id=coordination_id,
        environment_id=environment_id,
    )


def coordination_events(*, coordination: Coordination, after: int = 0, limit: int = 500) -> list[StageEvent]:
    """The coordination's events with an id above `after`, oldest first (index
    `stageevent_cursor`)."""
    return list(StageEvent.objects.filter(coordination=coordination, id__gt=after).order_by("id")[:limit])


def last_ended_target() -> QuerySet[CoordinationTarget]:
    """For a subquery over environments (`OuterRef("pk")`): the environment's targets that
    ended, most recent first (index target_environment_recent). Its first is the
    environment's last outcome."""
    return CoordinationTarget.objects.filter(remote_environment=OuterRef("pk"), status__in=TARGET_TERMINAL).order_by(
        "-id"
    )


def environments_with_last_outcome(
    queryset: QuerySet[RemoteEnvironment] | None = None, *, pks: Iterable[int] | None = None
) -> list[RemoteEnvironment]:
    """The environments (every one unless `queryset` or `pks` says), secrets left unread,
    each with `last_target`: its most recent target that ended (with that target's
    coordination), or None. Three queries."""
    last_ended = last_ended_target().values("id")[:1]
    if queryset is None:
        queryset = RemoteEnvironment.objects.all()
    queryset = queryset.defer(*SECRET_FIELDS)
    if pks is not None:
        queryset = queryset.filter(pk__in=list(pks))
    environments = list(queryset.annotate(last_target_id=Subquery(last_ended)))
    wanted = [environment.last_target_id for environment in environments if environment.last_target_id]
    ended = CoordinationTarget.objects.filter(pk__in=wanted).select_related("coordination")
    ended = ended.only(*TARGET_SUMMARY_FIELDS, "coordination__coordination_id", "coordination__status")
    targets = {target.pk: target for target in ended}
    for environment in environments:
        environment.last_target = targets.get(environment.last_target_id)  # type: ignore[attr-defined]
    return list(environments)


# An environment needs attention when its last health check failed or its last run did
# (the API's status overview and the dashboard's order both say so).
ATTENTION_OUTCOMES = PROGRESS_BUCKETS["failed"]


def environments_needing_attention() -> QuerySet[RemoteEnvironment]:
    """Environments whose last health check said unhealthy or whose last run that ended
    failed: the unhealthy first, then by environment_id. One query (a subquery per row on
    index target_environment_recent)."""
    last_status = Subquery(last_ended_target().values("status")[:1])
    unhealthy = Case(When(last_health=Health.UNHEALTHY, then=Value(0)), default=Value(1), output_field=IntegerField())
    return (
        RemoteEnvironment.objects.annotate(last_status=last_status, healthy_rank=unhealthy)
        .filter(Q(last_health=Health.UNHEALTHY) | Q(last_status__in=ATTENTION_OUTCOMES))
        .order_by("healthy_rank", "environment_id")
    )


def environment_counts() -> dict:
    """How many environments there are, enabled, and by last health: one query."""
    by_health = {health: Count("pk", filter=Q(last_health=health)) for health in Health.values}
    counts = RemoteEnvironment.objects.aggregate(
        total=Count("pk"), enabled=Count("pk", filter=Q(enabled=True)), **by_health
    )
    return {
        "total": counts["total"],
        "enabled": counts["enabled"],
        "health": {health: counts[health] for health in Health.values},
    }


# --- The admin's reads -----------------------------------------------------------------------


def coordinations_with_progress(queryset: QuerySet[Coordination]) -> QuerySet[Coordination]:
    """`queryset` with each coordination's progress counted by the database, as
    `progress_<bucket>` attributes: one query for a whole page, however many targets.
    `annotated_progress()` reads them back as the progress dict."""
    return queryset.select_related("triggered_by_user").annotate(
        progress_total=Count("targets"), **_bucket_counts("progress_")
    )


def coordinations_first_with_progress(queryset: QuerySet[Coordination], *, limit: int) -> list[Coordination]:
    """The first `limit` coordinations of `queryset` (in its order), with their progress as
    `coordinations_with_progress` counts it. The page is chosen first and counted after:
    counting inside the same query would group every coordination of a long history (SQLite
    does) before it keeps the page. Two queries."""
    pks = list(queryset.values_list("pk", flat=True)[:limit])
    counted = {row.pk: row for row in coordinations_with_progress(Coordination.objects.filter(pk__in=pks))}
    return [counted[pk] for pk in pks if pk in counted]


def annotated_progress(coordination: Coordination) -> dict[str, int]:
    """The progress dict of a coordination from `coordinations_with_progress`."""
    buckets = {bucket: getattr(coordination, f"progress_{bucket}") for bucket in PROGRESS_BUCKETS}
    return _progress(coordination.progress_total, buckets)  # type: ignore[attr-defined]


def environment_recent_targets(*, environment: RemoteEnvironment, limit: int = 10) -> list[CoordinationTarget]:
    """The environment's most recent parts in coordinations, newest first, without output."""
    return list(
        CoordinationTarget.objects.filter(remote_environment=environment)
        .select_related("coordination")
        .only(*TARGET_SUMMARY_FIELDS, "attempts", "error", "coordination__coordination_id", "coordination__status")
        .order_by("-id")[:limit]
    )


def environment_check_results(*, limit: int = 20) -> list[dict]:
    """The most recent health checks and preflights queued from the admin, newest first,
    as their django-q2 tasks returned them: `{"task_id", "stopped", "success",
    "connectivity", "checked_at", "reports": [CheckReport.as_json()]}`. A task that raised
    has `success` false and no reports."""
    results = []
    for task in Task.objects.filter(group=CHECK_TASK_GROUP).order_by("-stopped")[:limit]:
        value = task.result if task.success and isinstance(task.result, dict) else {}
        results.append(
            {
                "task_id": task.id,
                "name": task.name,
                "stopped": task.stopped,
                "success": task.success and bool(value),
                "connectivity": value.get("connectivity", bool(task.args and task.args[-1])),
                "reports": value.get("reports", []),
            }
        )
    return results


HOST_KEY_REASONS = ("host_key_unknown", "host_key_changed")


@dataclass(frozen=True)
class HostKeyOffer:
    """An SSH host key an environment offered that was not trusted: what an ADMIN may
    approve (pin). `source` says where it was seen (a coordination id, or "preflight")."""

    reason: str
    offered_key: str
    fingerprint: str
    expected_fingerprint: str
    seen_at: datetime
    source: str


def _offer_from(data: dict, reason: str, seen_at, source: str) -> HostKeyOffer | None:
    if not isinstance(data, dict) or not isinstance(data.get("offered_key"), str) or not data.get("fingerprint"):
        return None
    return HostKeyOffer(
        reason=reason,
        offered_key=data["offered_key"],
        fingerprint=str(data["fingerprint"]),
        expected_fingerprint=str(data.get("expected_fingerprint", "")),
        seen_at=seen_at,
        source=source,
    )


def environment_host_key_offer(
    *, environment: RemoteEnvironment, check_results: list[dict] | None = None
) -> HostKeyOffer | None:
    """The host key the environment offered when it last failed on an unknown or changed
    host key (in a coordination or a preflight), unless something since settled it: a key
    was pinned after it, or a run or preflight of the environment succeeded after it. None
    also when the offered key is the one pinned now."""
    if environment.connection_method != "ssh":
        return None
    offers: list[HostKeyOffer] = []
    settled_at = [environment.host_key_approved_at]
    failed = (
        CoordinationTarget.objects.filter(
            remote_environment=environment, status=TargetStatus.FAILED, reason__in=HOST_KEY_REASONS
        )
        .select_related("coordination")
        .only("id", "reason", "finished_at", "coordination", "coordination__coordination_id")
        .order_by("-id")
        .first()
    )
    if failed is not None:
        event = StageEvent.objects.filter(target=failed, new_status=TargetStatus.FAILED).order_by("-id").first()
        if event is not None:
            offer = _offer_from(event.data, failed.reason, event.created_at, failed.coordination.coordination_id)
            if offer:
                offers.append(offer)
    succeeded = (
        CoordinationTarget.objects.filter(remote_environment=environment, status=TargetStatus.SUCCEEDED)
        .only("id", "finished_at")
        .order_by("-id")
        .first()
    )
    if succeeded is not None:
        settled_at.append(succeeded.finished_at)
    if check_results is None:
        check_results = environment_check_results()
    for result in check_results:
        if not result["connectivity"]:
            continue
        for report in result["reports"]:
            if report.get("environment_id") != environment.environment_id:
                continue
            if report.get("ok"):
                settled_at.append(result["stopped"])
            else:
                data = report.get("data") or {}
                reason = "host_key_changed" if data.get("expected_fingerprint") else "host_key_unknown"
                offer = _offer_from(data, reason, result["stopped"], "preflight")
                if offer:
                    offers.append(offer)
    if not offers:
        return None
    offer = max(offers, key=lambda item: item.seen_at)
    if any(moment and moment >= offer.seen_at for moment in settled_at):
        return None
    pinned = environment.host_key.split()[:2]
    if pinned and pinned == offer.offered_key.split()[:2]:
        return None
    return offer


def environments_with_last_outcome_columns(queryset: QuerySet[RemoteEnvironment]) -> QuerySet[RemoteEnvironment]:
    """`queryset` with each environment's most recent ended target as columns
    (`last_status`, `last_reason`, `last_exit_code`, `last_coordination_pk`,
    `last_coordination_id`): one query for a page of a list (index target_environment_recent)."""
    last = last_ended_target()
    return queryset.annotate(
        last_status=Subquery(last.values("status")[:1]),
        last_reason=Subquery(last.values("reason")[:1]),
        last_exit_code=Subquery(last.values("exit_code")[:1]),
        last_coordination_pk=Subquery(last.values("coordination_id")[:1]),
        last_coordination_id=Subquery(last.values("coordination__coordination_id")[:1]),
    )


# --- Counts for the metrics: one aggregate query each, whatever the number of rows --------


def coordination_status_counts() -> dict[str, int]:
    """How many coordinations are in each status (0 for a status none is in)."""
    counts = dict.fromkeys(CoordinationStatus.values, 0)
    rows = Coordination.objects.order_by().values_list("status").annotate(count=Count("pk"))
    counts.update(dict(rows))
    return counts


@dataclass(frozen=True)
class DurationBuckets:
    """The finished coordinations of one status, counted cumulatively by duration."""

    status: str
    at_most: dict[float, int]  # bucket bound in seconds -> coordinations that took no longer
    count: int
    sum_seconds: float


def coordination_duration_buckets(bounds: Iterable[float]) -> list[DurationBuckets]:
    """Finished coordinations (started and ended) by status, with how many took at most each
    of `bounds` seconds, their number and their summed duration: one grouped query."""
    bounds = sorted(bounds)
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    at_most = [Count("pk", filter=Q(duration__lte=timedelta(seconds=bound))) for bound in bounds]
    rows = (
        Coordination.objects.order_by()
        .filter(status__in=COORDINATION_TERMINAL, started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=duration)
        .values("status")
        .annotate(count=Count("pk"), total=Sum("duration"), **{f"le_{i}": count for i, count in enumerate(at_most)})
        .values_list("status", "count", "total", *(f"le_{i}" for i in range(len(bounds))))
    )
    return [
        DurationBuckets(
            status=status,
            at_most=dict(zip(bounds, counts, strict=True)),
            count=count,
            sum_seconds=total.total_seconds() if total is not None else 0.0,
        )
        for status, count, total, *counts in rows
    ]


def target_outcome_counts() -> list[tuple[str, str, int]]:
    """(status, reason, how many targets) for every pair that has any."""
    rows = CoordinationTarget.objects.order_by().values_list("status", "reason").annotate(count=Count("pk"))
    return [(status, reason, count) for status, reason, count in rows]


def notification_delivery_counts() -> dict[str, int]:
    """Notifications delivered and failed (after their retries), from the notes
    deployments.notifications records."""
    return StageEvent.objects.filter(stage=Stage.NOTIFY).aggregate(
        delivered=Count("pk", filter=Q(data__delivered=True)), failed=Count("pk", filter=Q(data__delivered=False))
    )
