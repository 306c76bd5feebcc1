"""The platform's figures for Prometheus (GET /metrics), read from the database and the
broker at each scrape: every web process answers the same, and nothing is counted in a
process. Each family is one aggregate query (a count, never the rows), so a scrape costs
the same at 10 or 10,000 coordinations.

The names are in the README's metrics table and docs/grafana-dashboard.json queries them.
"""

import logging
from collections.abc import Iterator

from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from deployments.cluster import cluster_stats, tasks_queued
from deployments.models import CoordinationStatus as C
from deployments.selectors import (
    coordination_duration_buckets,
    coordination_status_counts,
    notification_delivery_counts,
    target_outcome_counts,
)
from environments.selectors import environment_health_counts, polling_agent_counts

logger = logging.getLogger(__name__)

PREFIX = "powerautomation"
# Queued: waiting for a worker to pick it up. Running: a worker is at it (awaiting approval
# waits for a person and counts in neither).
QUEUED = (C.PENDING,)
RUNNING = (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING, C.LOCAL_DEPLOYING, C.LOCAL_COMPLETED)
# Seconds: from a quick run of a few machines to the two hours Q_TIMEOUT allows by default.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


def _coordinations() -> Iterator[Metric]:
    counts = coordination_status_counts()
    by_status = GaugeMetricFamily(f"{PREFIX}_coordinations", "Coordinations by status.", labels=["status"])
    for status, count in sorted(counts.items()):
        by_status.add_metric([status], count)
    yield by_status
    yield GaugeMetricFamily(
        f"{PREFIX}_coordinations_queued",
        "Coordinations waiting for a worker (pending).",
        value=sum(counts[status] for status in QUEUED),
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_coordinations_running",
        "Coordinations a worker is running (EC2 stage, triggering, deploying, closing).",
        value=sum(counts[status] for status in RUNNING),
    )


def _durations() -> Iterator[Metric]:
    histogram = HistogramMetricFamily(
        f"{PREFIX}_coordination_duration_seconds",
        "How long finished coordinations took, from start to end, by final status.",
        labels=["status"],
    )
    for row in sorted(coordination_duration_buckets(DURATION_BUCKETS), key=lambda row: row.status):
        buckets = [(str(float(bound)), float(count)) for bound, count in sorted(row.at_most.items())]
        histogram.add_metric([row.status], [*buckets, ("+Inf", float(row.count))], row.sum_seconds)
    yield histogram


def _targets() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_targets",
        "Environments' parts in coordinations (targets) by status and failure reason ('' when none).",
        labels=["status", "reason"],
    )
    for status, reason, count in sorted(target_outcome_counts()):
        family.add_metric([status, reason], count)
    yield family


def _environments() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_environments", "Environments by last health check and enabled.", labels=["health", "enabled"]
    )
    for health, enabled, count in sorted(environment_health_counts()):
        family.add_metric([health, "true" if enabled else "false"], count)
    yield family
    agents = polling_agent_counts()
    yield GaugeMetricFamily(
        f"{PREFIX}_polling_environments",
        "Enabled environments reached by a polling agent.",
        value=agents["environments"],
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_polling_agents_online",
        "Enabled polling environments whose agent asked for work within 3 × its poll interval.",
        value=agents["online"],
    )


def _notifications() -> Iterator[Metric]:
    counts = notification_delivery_counts()
    family = CounterMetricFamily(
        f"{PREFIX}_notification_deliveries",
        "Notifications sent to the webhook, by outcome (failed: after every retry).",
        labels=["outcome"],
    )
    for outcome in ("delivered", "failed"):
        family.add_metric([outcome], counts[outcome])
    yield family


def _workers() -> Iterator[Metric]:
    """The broker's queue and the clusters' heartbeats (their stats in the broker's cache).
    A broker that cannot be read gives broker_up 0, not a failed scrape."""
    try:
        queued = tasks_queued()
        stats = cluster_stats()
    except Exception:
        logger.warning("metrics: cannot read the broker", exc_info=True)
        yield GaugeMetricFamily(f"{PREFIX}_broker_up", "1 when the broker and its cache could be read.", value=0)
        return
    yield GaugeMetricFamily(f"{PREFIX}_broker_up", "1 when the broker and its cache could be read.", value=1)
    yield GaugeMetricFamily(f"{PREFIX}_tasks_queued", "Tasks waiting in the broker for a worker.", value=queued)
    yield GaugeMetricFamily(
        f"{PREFIX}_worker_clusters", "Worker clusters (qcluster) whose heartbeat has not expired.", value=len(stats)
    )
    age = GaugeMetricFamily(
        f"{PREFIX}_worker_heartbeat_age_seconds",
        "Seconds since each worker cluster's newest heartbeat.",
        labels=["cluster", "host", "status"],
    )
    now = timezone.now()
    for stat in sorted(stats, key=lambda stat: str(stat.cluster_id)):
        age.add_metric(
            [str(stat.cluster_id), str(stat.host), str(stat.status)], max(0.0, (now - stat.timestamp).total_seconds())
        )
    yield age


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        for part in (_coordinations, _durations, _targets, _environments, _notifications, _workers):
            yield from part()


registry = CollectorRegistry(auto_describe=False)
registry.register(PlatformCollector())
