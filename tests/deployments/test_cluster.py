"""Reading django-q2's cluster stats (deployments.cluster): never a write, never a key
skipped, and an unreadable cache is said in the log."""

import logging
import os
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_q.conf import Conf
from django_q.signing import SignedPackage
from rest_framework.test import APIClient

from deployments import cluster
from tests.support.ports import free_port

ORM_BROKER_ONLY = pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")),
    reason="the ORM broker keeps cluster stats in Django's cache; Redis keeps them as its own keys",
)
GONE, LIVE = f"{Conf.Q_STAT}:gone", f"{Conf.Q_STAT}:live"


def publish_live_cluster_after_a_gone_one() -> None:
    """As the cache looks after a cluster died: its key is still listed, its stat expired."""
    stat = SimpleNamespace(workers=[1], status=Conf.IDLE, timestamp=timezone.now())
    cache.set(Conf.Q_STAT, [GONE, LIVE], None)
    cache.set(LIVE, SignedPackage.dumps(stat, True), 30)


@ORM_BROKER_ONLY
@pytest.mark.django_db
def test_the_health_endpoint_leaves_the_cluster_key_list_as_it_found_it():
    publish_live_cluster_after_a_gone_one()

    APIClient().get("/api/health")

    assert cache.get(Conf.Q_STAT) == [GONE, LIVE]


@ORM_BROKER_ONLY
@pytest.mark.django_db
def test_the_health_endpoint_sees_a_worker_listed_after_a_cluster_that_is_gone():
    publish_live_cluster_after_a_gone_one()

    body = APIClient().get("/api/health").json()

    assert body["checks"]["worker"]["ok"] is True, body


@ORM_BROKER_ONLY  # the Redis broker's connection is set when django-q2 loads, not by CACHES
@pytest.mark.django_db
def test_an_unreadable_cache_is_logged_and_the_run_goes_on(settings, caplog, monkeypatch):
    # A Redis cache nothing listens behind (loopback): every read raises.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5},
        }
    }
    monkeypatch.setattr(cluster, "_last_warning", -cluster.WARNING_INTERVAL_SECONDS)

    with caplog.at_level(logging.WARNING, logger="deployments.cluster"):
        assert cluster.cluster_of_worker_stopping(os.getpid()) is False

    (record,) = [r for r in caplog.records if r.name == "deployments.cluster"]
    assert "cannot read the cluster's status" in record.getMessage()
    assert record.exc_info is not None
