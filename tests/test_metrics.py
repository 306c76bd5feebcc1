"""GET /metrics: Prometheus' text format, figures read from the database and the broker
(equal to what the rows say), let in by token or network, and a scrape's cost does not
grow with the rows."""

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat, Status
from prometheus_client.parser import text_string_to_metric_families

from console.metrics import DURATION_BUCKETS, QUEUED, RUNNING
from deployments.models import Coordination, CoordinationStatus as C, CoordinationTarget, StageEvent, TargetStatus as T
from environments.models import RemoteEnvironment
from tests.factories import make_coordination, make_environment
from tests.support.processes import start_with

pytestmark = pytest.mark.django_db

TOKEN = "m" * 40


def scrape(client: Client | None = None, **extra) -> dict:
    """{metric family name: {(sample name, labels as sorted tuple): value}}"""
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    families = text_string_to_metric_families(response.content.decode())
    return {
        family.name: {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples}
        for family in families
    }


def value(figures: dict, family: str, sample: str | None = None, **labels) -> float:
    return figures[family][(sample or family, tuple(sorted(labels.items())))]


def make_fleet() -> None:
    """Environments in every health, enabled and not; polling agents online and offline;
    coordinations in several states, finished ones of several durations; failed targets with
    reasons; notifications delivered and failed."""
    now = timezone.now()
    for index, health in enumerate(["healthy", "healthy", "unhealthy", "unknown", "healthy"]):
        make_environment(f"ssh-{index}", last_health=health, enabled=index != 4)
    make_environment("poll-online", connection_method="polling", host="", poll_interval=10)
    RemoteEnvironment.objects.filter(environment_id="poll-online").update(agent_seen_at=now - timedelta(seconds=25))
    make_environment("poll-late", connection_method="polling", host="", poll_interval=5)
    RemoteEnvironment.objects.filter(environment_id="poll-late").update(agent_seen_at=now - timedelta(seconds=25))
    make_environment("poll-never", connection_method="polling", host="")
    for index, (status, seconds) in enumerate(
        [(C.COMPLETED, 5), (C.COMPLETED, 45), (C.COMPLETED, 700), (C.FAILED, 20), (C.CANCELLED, 9000)]
    ):
        make_coordination(
            f"done-{index}",
            status,
            {"ssh-0": T.SUCCEEDED if status == C.COMPLETED else T.FAILED, "ssh-1": T.SUCCEEDED},
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
        )
    make_coordination("queued", C.PENDING, {"ssh-2": T.PENDING})
    make_coordination("running", C.LOCAL_DEPLOYING, {"ssh-2": T.RUNNING, "ssh-3": T.PENDING}, started_at=now)
    make_coordination("approval", C.AWAITING_APPROVAL, {"ssh-3": T.PENDING}, started_at=now)
    CoordinationTarget.objects.filter(coordination__coordination_id="done-3").update(reason="timeout")
    failed = Coordination.objects.get(coordination_id="done-3")
    for delivered in (False, False, True):
        StageEvent.objects.create(coordination=failed, stage="notify", data={"delivered": delivered, "kind": "ended"})


def test_the_figures_equal_the_rows():
    make_fleet()

    figures = scrape()

    for status in C.values:
        expected = Coordination.objects.filter(status=status).count()
        assert value(figures, "powerautomation_coordinations", status=status) == expected, status
    assert (
        value(figures, "powerautomation_coordinations_queued")
        == Coordination.objects.filter(status__in=QUEUED).count()
        == 1
    )
    assert (
        value(figures, "powerautomation_coordinations_running")
        == Coordination.objects.filter(status__in=RUNNING).count()
        == 1
    )
    for row in CoordinationTarget.objects.values("status", "reason").distinct():
        expected = CoordinationTarget.objects.filter(**row).count()
        assert value(figures, "powerautomation_targets", **row) == expected, row
    assert value(figures, "powerautomation_targets", status=T.FAILED, reason="timeout") == 1
    for health in ("healthy", "unhealthy", "unknown"):
        for enabled in (True, False):
            expected = RemoteEnvironment.objects.filter(last_health=health, enabled=enabled).count()
            got = figures["powerautomation_environments"].get(
                ("powerautomation_environments", (("enabled", str(enabled).lower()), ("health", health))), 0
            )
            assert got == expected, (health, enabled)
    assert value(figures, "powerautomation_polling_environments") == 3
    assert value(figures, "powerautomation_polling_agents_online") == 1  # seen 25 s ago, within 3 × 10 s
    assert (
        value(
            figures,
            "powerautomation_notification_deliveries",
            "powerautomation_notification_deliveries_total",
            outcome="failed",
        )
        == 2
    )
    assert (
        value(
            figures,
            "powerautomation_notification_deliveries",
            "powerautomation_notification_deliveries_total",
            outcome="delivered",
        )
        == 1
    )
    assert value(figures, "powerautomation_broker_up") == 1


def test_the_duration_histogram_counts_finished_coordinations_by_their_duration():
    make_fleet()
    finished = Coordination.objects.filter(status__in=[C.COMPLETED, C.FAILED, C.CANCELLED])

    figures = scrape()

    name = "powerautomation_coordination_duration_seconds"
    for status in (C.COMPLETED, C.FAILED, C.CANCELLED):
        durations = [(c.finished_at - c.started_at).total_seconds() for c in finished.filter(status=status)]
        for bound in DURATION_BUCKETS:
            got = value(figures, name, f"{name}_bucket", status=status, le=str(bound))
            assert got == sum(1 for seconds in durations if seconds <= bound), (status, bound)
        assert value(figures, name, f"{name}_bucket", status=status, le="+Inf") == len(durations)
        assert value(figures, name, f"{name}_count", status=status) == len(durations)
        assert value(figures, name, f"{name}_sum", status=status) == pytest.approx(sum(durations), abs=0.01)
    assert value(figures, name, f"{name}_bucket", status=C.COMPLETED, le="60.0") == 2  # 5 s and 45 s, not 700 s


def test_the_polling_agents_online_agree_with_the_preflights_rule():
    from environments.connectors.polling import is_online

    make_fleet()

    figures = scrape()

    polling = RemoteEnvironment.objects.filter(connection_method="polling", enabled=True)
    online = [env for env in polling if is_online(env.agent_seen_at, env.poll_interval)]
    assert value(figures, "powerautomation_polling_agents_online") == len(online) == 1


def test_a_cluster_heartbeat_shows_its_age():
    cluster_id = uuid.uuid4()
    status = Status(pid=4242, cluster_id=cluster_id)
    status.status, status.workers = Conf.IDLE, [4243]
    status.timestamp = timezone.now() - timedelta(seconds=2)
    get_broker().set_stat(Stat.get_key(cluster_id), SignedPackage.dumps(status, True), 30)

    figures = scrape()

    age = value(
        figures,
        "powerautomation_worker_heartbeat_age_seconds",
        cluster=str(cluster_id),
        host=status.host,
        status=Conf.IDLE,
    )
    assert 2 <= age < 30
    assert value(figures, "powerautomation_worker_clusters") >= 1
    assert value(figures, "powerautomation_tasks_queued") == get_broker().queue_size()


def test_a_scrape_costs_the_same_queries_at_10_and_at_200_rows():
    def queries_for(count: int, prefix: str) -> int:
        for index in range(count):
            make_environment(f"{prefix}-{index}", last_health="healthy" if index % 2 else "unhealthy")
            make_coordination(
                f"{prefix}-{index}",
                C.FAILED,
                {f"{prefix}-{index}": T.FAILED},
                started_at=timezone.now() - timedelta(seconds=index),
                finished_at=timezone.now(),
            )
        with CaptureQueriesContext(connection) as queries:
            scrape()
        return len(queries)

    few = queries_for(10, "few")
    many = queries_for(190, "many")

    assert few == many
    assert many <= 10


# --- Who may scrape -------------------------------------------------------------------


def test_loopback_may_scrape_without_a_token():
    assert Client().get("/metrics").status_code == 200  # the test client comes from 127.0.0.1


def test_another_address_without_a_token_is_refused_without_figures():
    response = Client().get("/metrics", REMOTE_ADDR="10.20.30.40")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"powerautomation_" not in response.content


def test_the_token_lets_any_address_in(settings):
    settings.METRICS_TOKEN = TOKEN

    response = Client().get("/metrics", REMOTE_ADDR="10.20.30.40", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert b"powerautomation_coordinations" in response.content


@pytest.mark.parametrize("given", [f"Bearer {'x' * 40}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer "])
def test_a_wrong_token_is_refused_even_from_an_allowed_network(settings, given):
    settings.METRICS_TOKEN = TOKEN

    response = Client().get("/metrics", HTTP_AUTHORIZATION=given)

    assert response.status_code == 403
    assert b"powerautomation_" not in response.content


def test_a_token_is_refused_when_none_is_configured(settings):
    settings.METRICS_TOKEN = ""

    response = Client().get("/metrics", REMOTE_ADDR="10.20.30.40", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 403


def test_an_allowed_network_may_scrape_and_others_may_not(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd00::/8"]

    assert Client().get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="fd00::1").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="10.21.0.1").status_code == 401
    assert Client().get("/metrics").status_code == 401  # loopback is no longer in the list


def test_an_ipv4_client_of_a_dual_stack_listener_counts_as_ipv4():
    assert Client().get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200


def test_x_forwarded_for_is_ignored_unless_the_api_trusts_a_proxy(settings):
    forged = {"REMOTE_ADDR": "10.20.30.40", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    assert Client().get("/metrics", **forged).status_code == 401

    # Behind one trusted proxy on this machine: the proxy's connection is loopback for
    # everyone; the client is the address the proxy appended.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    via_proxy = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1, 10.20.30.40"}
    assert Client().get("/metrics", **via_proxy).status_code == 401
    from_loopback = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    assert Client().get("/metrics", **from_loopback).status_code == 200


def test_only_get_is_answered():
    assert Client().post("/metrics").status_code == 405


# --- Settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("METRICS_TOKEN", "short", "METRICS_TOKEN must be at least 32 characters, not 5"),
        ("METRICS_TOKEN", "x" * 31 + " y", "METRICS_TOKEN may hold only printable ASCII"),
        ("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,10.0.0.300/8", "METRICS_ALLOWED_NETWORKS: '10.0.0.300/8'"),
        ("METRICS_ALLOWED_NETWORKS", "10.0.0.1/8", "METRICS_ALLOWED_NETWORKS: '10.0.0.1/8' is not a network"),
    ],
)
def test_a_bad_metrics_setting_stops_start_up_naming_it(variable, value, message):
    result = start_with(**{variable: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_networks_none_leaves_only_the_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []

    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_allowed_networks_reads_none_and_a_list(monkeypatch):
    from powerautomation import settings as settings_module

    monkeypatch.setenv("METRICS_ALLOWED_NETWORKS", "none")
    assert settings_module._metrics_networks() == []
    monkeypatch.setenv("METRICS_ALLOWED_NETWORKS", " 10.0.0.0/8 , fd00::/8 ")
    assert settings_module._metrics_networks() == ["10.0.0.0/8", "fd00::/8"]
    monkeypatch.delenv("METRICS_ALLOWED_NETWORKS")
    assert settings_module._metrics_networks() == ["127.0.0.0/8", "::1/128"]


# --- The Grafana dashboard ------------------------------------------------------------

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


def exported_names() -> set[str]:
    response = Client().get("/metrics")
    names = set()
    for family in text_string_to_metric_families(response.content.decode()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_every_dashboard_query_names_only_metrics_the_endpoint_exports():
    make_fleet()
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())

    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    expressions = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"\bpowerautomation_[a-z_]+", target["expr"]))
            assert named, (panel["title"], target["expr"])
            assert named <= exported, (panel["title"], named - exported)
            expressions.append(target["expr"])
    # The panels an operator wants first are there.
    for wanted in (
        "powerautomation_coordination_duration_seconds_count",
        "powerautomation_coordinations_running",
        "powerautomation_coordinations_queued",
        "powerautomation_targets",
        "powerautomation_environments",
        "powerautomation_worker_heartbeat_age_seconds",
        "powerautomation_polling_agents_online",
        "powerautomation_notification_deliveries_total",
        "powerautomation_coordination_duration_seconds_bucket",
    ):
        assert any(re.search(rf"\b{wanted}\b", expr) for expr in expressions), wanted
