"""What django-q2's clusters say about themselves, read without writing.

Each cluster's sentinel publishes a signed `Stat` (status, worker pids, timestamp) in the
broker's cache every half second. django-q2's own `Stat.get_all()` is not a read: with the
ORM broker it writes the list of cluster keys back (racing the sentinels' writes) and,
dropping an expired key while iterating, skips the key after it. A worker polling that
could miss its own cluster stopping, and so could the health endpoint's callers make it
miss it. Both read through here instead.
"""

import logging
import time

from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.signing import BadSignature, SignedPackage
from django_q.status import Stat

logger = logging.getLogger(__name__)

# An unreadable cache is logged at most this often per process, not on every poll.
WARNING_INTERVAL_SECONDS = 60.0
_last_warning = -WARNING_INTERVAL_SECONDS


def cluster_stats() -> list[Stat]:
    """Every cluster's latest Stat that has not expired. Raises what the cache raises."""
    broker = get_broker()
    if type(broker).get_stats is Broker.get_stats and broker.cache is not None:
        # The ORM broker keeps the stats in Django's cache, under a list of keys.
        packs = [broker.cache.get(key) for key in broker.cache.get(Conf.Q_STAT) or []]
    else:  # Redis keeps them as its own keys, read without writing.
        packs = broker.get_stats(f"{Conf.Q_STAT}:*") or []
    stats = []
    for pack in packs:
        if not pack:
            continue
        try:
            stats.append(SignedPackage.loads(pack))
        except BadSignature:
            continue
    return stats


def cluster_of_worker_stopping(pid: int) -> bool:
    """Is the cluster that worker process `pid` belongs to shutting down (SIGTERM or Ctrl-C
    to `qcluster`)? The worker itself gets no signal then, only a STOP after its task.
    False when the cache cannot be read (logged): the run's lease still protects it."""
    global _last_warning
    try:
        stats = cluster_stats()
    except Exception:
        now = time.monotonic()
        if now - _last_warning >= WARNING_INTERVAL_SECONDS:
            _last_warning = now
            logger.warning(
                "cannot read the cluster's status from the cache; assuming it is not stopping", exc_info=True
            )
        return False
    for stat in stats:
        if pid in (stat.workers or []):
            return stat.status in (Conf.STOPPING, Conf.STOPPED)
    return False


def tasks_queued() -> int:
    """Tasks waiting in the broker's queue for a worker. Raises what the broker raises."""
    return get_broker().queue_size() or 0
