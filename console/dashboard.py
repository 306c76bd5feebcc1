"""The dashboard at the top of the admin's front page: the fleet's health (counts by health
and by tag, then the environments that need attention first), active coordinations with live
progress, recent history, latest checks.

The page and the fragments its script (static/console/live.js) polls for every 2 s are rendered by
the same templates, so nothing is drawn twice (once in Python, once in JavaScript). Each
fragment has a version, a short hash of database marks that move whenever what it shows
changes (`deployments.overview.control_room_marks`) and of a clock tick for its relative
times; the poll sends back the versions it has and gets only the fragments whose version
moved, so a poll when nothing changed is a few hundred bytes at any fleet size."""

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.admin_roles import can_operate
from console.presenters import (
    HEALTH_TONE,
    TARGET_TONE,
    agent_presence,
    coordination_url,
    format_duration,
    progress_summary,
    triggered_by_label,
)
from deployments.models import Coordination
from deployments.overview import control_room_marks, fleet_overview
from deployments.selectors import (
    annotated_progress,
    coordinations_active,
    coordinations_finished,
    coordinations_first_with_progress,
    coordinations_with_progress,
    environment_check_results,
    environments_with_last_outcome,
)

ACTIVE_LIMIT = 50
RECENT_LIMIT = 10
CHECK_RESULTS_SHOWN = 3
# Environment tiles on the dashboard: those that need attention first, the rest in the list.
TILES_SHOWN = 60
# Above this many enabled environments, the dashboard's Deploy form offers all or by tag,
# and single ones on the Deploy page (one checkbox each would be most of the page).
DEPLOY_CHOICES_SHOWN = 50
# Tags counted on the dashboard (the largest ones, when more are in use).
TAGS_SHOWN = 30


@dataclass
class CoordinationRow:
    """A coordination as the dashboard and the lists show it."""

    coordination: Coordination
    progress: dict
    url: str

    @property
    def summary(self) -> str:
        return progress_summary(self.progress)

    @property
    def duration(self) -> str:
        return format_duration(self.coordination.duration_seconds)

    @property
    def triggered_by(self) -> str:
        return triggered_by_label(self.coordination)


def _rows(queryset) -> list[CoordinationRow]:
    return [CoordinationRow(c, annotated_progress(c), coordination_url(c)) for c in queryset]


def _environment_tiles(environments) -> list[dict]:
    tiles = []
    for environment in environments:
        target = environment.last_target
        tiles.append(
            {
                "environment": environment,
                "url": reverse("admin:environments_remoteenvironment_change", args=[environment.pk]),
                "tone": HEALTH_TONE.get(environment.last_health, "waiting"),
                "last_target": target,
                "last_tone": TARGET_TONE[target.status] if target else "",
                "agent": agent_presence(environment),  # polling environments only; from the row itself
            }
        )
    return tiles


def _check_summaries(results: list[dict]) -> list[dict]:
    summaries = []
    for result in results[:CHECK_RESULTS_SHOWN]:
        reports = result["reports"]
        summaries.append(
            {
                **result,
                "kind": "Connectivity preflight" if result["connectivity"] else "Health check",
                "ok": sum(1 for report in reports if report.get("ok") is True),
                "failed": [report for report in reports if report.get("ok") is False],
                "skipped": sum(1 for report in reports if report.get("ok") is None),
            }
        )
    return summaries


def _health_context() -> dict:
    overview = fleet_overview()
    shown = overview.ordered_pks[:TILES_SHOWN]
    loaded = {environment.pk: environment for environment in environments_with_last_outcome(pks=shown)}
    tags = overview.by_tag
    if len(tags) > TAGS_SHOWN:
        largest = sorted(tags, key=lambda counts: (-counts.total, counts.tag))[:TAGS_SHOWN]
        tags = sorted(largest, key=lambda counts: counts.tag)
    tiles = _environment_tiles(loaded[pk] for pk in shown if pk in loaded)
    return {
        "overview": overview,
        "tag_counts": tags,
        "tags_hidden": len(overview.by_tag) - len(tags),
        "tiles": tiles,
        "tiles_hidden": overview.total - len(tiles),
    }


def _active_context() -> dict:
    active = coordinations_with_progress(coordinations_active()).order_by("created_at", "id")[:ACTIVE_LIMIT]
    return {"active_rows": _rows(active)}


def _recent_context() -> dict:
    return {"recent_rows": _rows(coordinations_first_with_progress(coordinations_finished(), limit=RECENT_LIMIT))}


def _checks_context() -> dict:
    return {"checks": _check_summaries(environment_check_results(limit=CHECK_RESULTS_SHOWN))}


# Each fragment: its template, what it needs, and how often its relative times ("3 min
# ago", "running for", "agent last seen 4 s ago") are redrawn when nothing else changed.
FRAGMENTS = {
    "health": ("admin/deployments/dashboard/_health.html", _health_context),
    "active": ("admin/deployments/dashboard/_active.html", _active_context),
    "recent": ("admin/deployments/dashboard/_recent.html", _recent_context),
    "checks": ("admin/deployments/dashboard/_checks.html", _checks_context),
}
VERSION_PATTERN = re.compile("-".join([r"[0-9a-f]{10}"] * len(FRAGMENTS)))


def fragment_versions(marks: dict, now: datetime) -> dict[str, str]:
    """Each fragment's version: what moves when its content changes."""
    seconds = int(now.timestamp())
    minute = seconds // 60
    health_tick = seconds // (15 if marks["polling"] else 60)  # agents' "last seen"
    active_tick = seconds // 10 if marks["active"] else 0  # "running for"
    parts = {
        "health": (marks["environments"], marks["health_changes"], marks["events"], health_tick),
        "active": (marks["events"], marks["coordinations"], active_tick),
        "recent": (marks["events"], marks["coordinations"], minute),
        "checks": (marks["checks"], minute),
    }
    return {name: hashlib.blake2b(repr(parts[name]).encode(), digest_size=5).hexdigest() for name in FRAGMENTS}


def joined_version(versions: dict[str, str]) -> str:
    return "-".join(versions[name] for name in FRAGMENTS)


def parse_version(raw: str) -> dict[str, str]:
    """The versions a client has, from the `version` it was sent; ValueError when it is
    not one."""
    if not VERSION_PATTERN.fullmatch(raw):
        raise ValueError("must be the version the previous answer gave")
    return dict(zip(FRAGMENTS, raw.split("-"), strict=True))


def current_versions() -> dict[str, str]:
    return fragment_versions(control_room_marks(), timezone.now())


def dashboard_context(request, names=tuple(FRAGMENTS), *, versions: dict[str, str] | None = None) -> dict:
    """What the dashboard shows (only the fragments `names`), and the version of each,
    taken before the data: a change made meanwhile moves the next version. A constant
    number of queries, whatever the number of environments and coordinations."""
    now = timezone.now()
    versions = versions or current_versions()
    context = {"can_operate": can_operate(request), "generated_at": now, "versions": versions}
    context["version"] = joined_version(versions)
    for name in names:
        context.update(FRAGMENTS[name][1]())
    return context


def dashboard_fragments(request, context: dict, names=tuple(FRAGMENTS)) -> dict[str, str]:
    return {name: render_to_string(FRAGMENTS[name][0], context, request=request) for name in names}


def dashboard_live(request, *, known: dict[str, str] | None = None) -> dict:
    """The dashboard's poll: its version, the fragments whose version differs from `known`
    (all without it), and the active and recent coordinations of those as data."""
    versions = current_versions()
    known = known or {}
    changed = [name for name in FRAGMENTS if known.get(name) != versions[name]]
    context = dashboard_context(request, changed, versions=versions)
    rows = context.get("active_rows", []) + context.get("recent_rows", [])
    return {
        "version": context["version"],
        "generated_at": context["generated_at"].isoformat(),
        "fragments": dashboard_fragments(request, context, changed),
        "coordinations": {
            row.coordination.coordination_id: {"status": row.coordination.status, "progress": row.progress}
            for row in rows
        },
    }
