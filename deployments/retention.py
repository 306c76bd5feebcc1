"""History retention: which finished coordinations may go, and deleting them (with their
targets, events, callback tokens, leases and output: every row that points at them with
on_delete=CASCADE) in short transactions. `prune_history` and the daily schedule
(HISTORY_RETENTION_DAYS) both call `history_prune`."""

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db import models, router, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Window
from django.db.models.deletion import CASCADE, Collector
from django.db.models.functions import RowNumber
from django.utils import timezone
from django_q.models import Schedule

from deployments.models import COORDINATION_ACTIVE, Coordination, CoordinationTarget
from deployments.selectors import coordinations_finished_entirely

logger = logging.getLogger(__name__)

DEFAULT_KEEP_LAST = 5
MAX_KEEP_LAST = 10_000
# One batch is one transaction: at most this many coordinations, and it stops early once
# their targets reach BATCH_TARGETS (a coordination of 3,000 environments holds tens of
# thousands of rows), so no write lock is held for long on SQLite.
BATCH_COORDINATIONS = 200
BATCH_TARGETS = 5_000

AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_AGE = timedelta(days=36_500)
_AGE = re.compile(r"([0-9]{1,12})([smhd])")

RETENTION_SCHEDULE_NAME = "history retention"


class AgeError(ValueError):
    """An age that is not a whole number followed by s, m, h or d, or beyond MAX_AGE."""


def parse_age(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `0s` → a timedelta."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise AgeError(f"{text[:40]!r} is not an age: a whole number and a unit, s, m, h or d (e.g. 90d)")
    seconds = int(match[1]) * AGE_UNITS[match[2]]
    if seconds > MAX_AGE.total_seconds():
        raise AgeError(f"{text!r} is more than {MAX_AGE.days} days")
    return timedelta(seconds=seconds)


def pruned_models() -> list[type[models.Model]]:
    """Coordination and every model whose rows are deleted with it (on_delete=CASCADE,
    followed down), in that order: the tables a prune reports on."""
    found: list[type[models.Model]] = [Coordination]
    for model in found:  # grows while it is walked
        for relation in model._meta.related_objects:
            if relation.on_delete is CASCADE and relation.related_model not in found:
                found.append(relation.related_model)
    return found


def table_name(model: type[models.Model]) -> str:
    """How a report names a model's rows: its plural, e.g. `stage_events`."""
    return str(model._meta.verbose_name_plural).replace(" ", "_")


@dataclass
class PruneReport:
    cutoff: datetime
    keep_last: int
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)  # table name → rows (would be) deleted
    batches: int = 0

    def as_dict(self) -> dict:
        return {
            "cutoff": self.cutoff.isoformat(),
            "keep_last": self.keep_last,
            "dry_run": self.dry_run,
            "batches": self.batches,
            "deleted": self.deleted,
        }

    def summary(self) -> str:
        counts = ", ".join(f"{rows} {name}" for name, rows in self.deleted.items())
        verb = "would delete" if self.dry_run else "deleted"
        return f"{verb} {counts} (finished before {self.cutoff.isoformat()}, keeping the last {self.keep_last})"


def _kept_by_environment(keep_last: int) -> QuerySet:
    """The coordination ids of each environment's newest `keep_last` finished
    coordinations (by creation), one window query over the targets."""
    newest_first = Window(
        RowNumber(),
        partition_by=[F("environment_id")],
        order_by=[F("coordination__created_at").desc(), F("coordination_id").desc()],
    )
    return (
        CoordinationTarget.objects.filter(coordination__in=coordinations_finished_entirely())
        .annotate(rank=newest_first)
        .filter(rank__lte=keep_last)
        .values("coordination_id")
    )


def _untouchable() -> Q:
    """Rows a prune leaves even when old: one a running coordination retries (deleting it
    would rewrite that coordination's retry_of)."""
    retried_by_running = Coordination.objects.filter(retry_of=OuterRef("pk"), status__in=COORDINATION_ACTIVE)
    return Q(Exists(retried_by_running))


def coordinations_prunable(*, cutoff: datetime, keep_last: int) -> QuerySet[Coordination]:
    """What a prune deletes:

    1. coordinations finished entirely (ended, no environment in them still running),
    2. that finished before `cutoff` (when a row has no finish time, its creation counts),
    3. that no running coordination retries,
    4. and that are not among the newest `keep_last` finished coordinations of any
       environment they have a target for.
    """
    old = Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
    prunable = coordinations_finished_entirely().filter(old).exclude(_untouchable())
    if keep_last > 0:
        prunable = prunable.exclude(pk__in=_kept_by_environment(keep_last))
    return prunable


def _batches(pks: list[int]) -> Iterator[list[int]]:
    """`pks` in batches of at most BATCH_COORDINATIONS coordinations and (but for a single
    larger one) BATCH_TARGETS targets."""
    for start in range(0, len(pks), BATCH_COORDINATIONS):
        chunk = pks[start : start + BATCH_COORDINATIONS]
        sizes = dict(
            CoordinationTarget.objects.filter(coordination_id__in=chunk)
            .values_list("coordination_id")
            .annotate(n=models.Count("pk"))
            .values_list("coordination_id", "n")
        )
        batch: list[int] = []
        targets = 0
        for pk in chunk:
            if batch and targets + sizes.get(pk, 0) > BATCH_TARGETS:
                yield batch
                batch, targets = [], 0
            batch.append(pk)
            targets += sizes.get(pk, 0)
        if batch:
            yield batch


def _collector(pks: list[int]) -> Collector:
    """Everything deleting these coordinations deletes, as Django's own delete gathers it;
    checked again here, inside the batch, so a row that changed since the selection stays."""
    batch = Coordination.objects.filter(pk__in=pks) & coordinations_finished_entirely()
    collector = Collector(using=router.db_for_write(Coordination))
    collector.collect(batch.exclude(_untouchable()).order_by())
    return collector


def _rows_collected(collector: Collector) -> dict[str, int]:
    """What the collector would delete, per table, each row once (a stage event is
    reached through its coordination and through its target)."""
    rows: dict[str, set] = {}
    for model, instances in collector.data.items():
        rows.setdefault(table_name(model), set()).update(instance.pk for instance in instances)
    for queryset in collector.fast_deletes:
        rows.setdefault(table_name(queryset.model), set()).update(queryset.values_list("pk", flat=True))
    return {name: len(pks) for name, pks in rows.items()}


def history_prune(
    *, older_than: timedelta, keep_last: int = DEFAULT_KEEP_LAST, dry_run: bool = False, now: datetime | None = None
) -> PruneReport:
    """Delete what `coordinations_prunable` selects, one short transaction per batch (an
    interrupted prune leaves whole coordinations, never half of one). With `dry_run`, count
    the same rows and delete nothing."""
    cutoff = (now or timezone.now()) - older_than
    report = PruneReport(cutoff=cutoff, keep_last=keep_last, dry_run=dry_run)
    report.deleted = dict.fromkeys((table_name(model) for model in pruned_models()), 0)
    # Selected once: a coordination selected stays deletable while this runs (a coordination
    # that finishes meanwhile only pushes older ones out of an environment's newest), and
    # each batch checks again what can change: finished, and retried by a running one.
    pks = list(coordinations_prunable(cutoff=cutoff, keep_last=keep_last).order_by("pk").values_list("pk", flat=True))
    for batch in _batches(pks):
        if dry_run:
            counts = _rows_collected(_collector(batch))
        else:
            with transaction.atomic():
                _, by_label = _collector(batch).delete()
            counts = {table_name(apps.get_model(label)): rows for label, rows in by_label.items()}
        for name, rows in counts.items():
            report.deleted[name] = report.deleted.get(name, 0) + rows
        report.batches += 1
    return report


def retention_schedule_sync() -> None:
    """The daily prune runs with HISTORY_RETENTION_DAYS (0: no schedule, history is kept);
    `migrate` applies it, like the health-check schedule."""
    days = settings.HISTORY_RETENTION_DAYS
    if days == 0:
        Schedule.objects.filter(name=RETENTION_SCHEDULE_NAME).delete()
        return
    schedule, created = Schedule.objects.get_or_create(
        name=RETENTION_SCHEDULE_NAME,
        defaults={
            "func": "deployments.tasks.prune_history",
            "args": repr(days),
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
            # A day after it first appears: time to set HISTORY_RETENTION_DAYS after an upgrade.
            "next_run": timezone.now() + timedelta(days=1),
        },
    )
    if not created and schedule.args != repr(days):
        schedule.args = repr(days)
        schedule.save(update_fields=["args"])
