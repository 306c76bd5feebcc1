"""The platform's own health: database, broker and task workers.

Each probe answers (ok, detail) and never raises: a probe that breaks reports its part
down. Details name the kind of failure only; the full error goes to the log, since this
endpoint needs no authentication.
"""

import logging
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf

from deployments.cluster import cluster_stats

logger = logging.getLogger(__name__)

# A worker counts as seen when its cluster reported within this many seconds. django-q2
# clusters write their stats to the shared cache every half second and they expire in 3.
WORKER_SEEN_SECONDS = 60


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


def _failed(part: str, exc: Exception) -> Probe:
    logger.warning("health: %s check failed", part, exc_info=exc)
    return Probe(False, f"unreachable ({type(exc).__name__})")


def probe_database() -> Probe:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means the same thing: not reachable
        return _failed("database", exc)
    return Probe(True, f"{connection.vendor} reachable")


def probe_broker() -> Probe:
    try:
        broker = get_broker()
        if broker.ping() is False:
            return Probe(False, "the broker does not answer")
        queued = broker.queue_size()
        info = broker.info()
    except Exception as exc:
        return _failed("broker", exc)
    return Probe(True, f"{info} reachable, {queued or 0} tasks queued")


def probe_worker() -> Probe:
    try:
        stats = cluster_stats()
    except Exception as exc:
        return _failed("worker", exc)
    now = timezone.now()
    running = [
        stat
        for stat in stats
        if stat.status in (Conf.IDLE, Conf.WORKING)
        and stat.workers
        and (now - stat.timestamp).total_seconds() <= WORKER_SEEN_SECONDS
    ]
    if not running:
        return Probe(False, f"no worker seen in the last {WORKER_SEEN_SECONDS} s: is `manage.py qcluster` running?")
    workers = sum(len(stat.workers) for stat in running)
    last_seen = max(stat.timestamp for stat in running)
    return Probe(True, f"{workers} workers in {len(running)} clusters, last seen {last_seen.isoformat()}")


def platform_health() -> dict[str, Probe]:
    return {"database": probe_database(), "broker": probe_broker(), "worker": probe_worker()}
