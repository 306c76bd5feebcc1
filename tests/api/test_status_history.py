"""GET status (the overview, or one coordination) and GET history."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from deployments.models import Coordination, CoordinationStatus as C, TargetStatus as T
from environments.models import RemoteEnvironment
from tests.factories import make_coordination, make_environment

HISTORY = "/api/deployment/history"


@pytest.fixture
def environments(db):
    make_environment("env_a")
    make_environment("env_b")
    make_environment("env_c")


def test_status_shows_active_coordinations_with_progress(viewer_client, environments):
    make_coordination("deploy_done", C.COMPLETED, {"env_a": T.SUCCEEDED})
    make_coordination("deploy_now", C.LOCAL_DEPLOYING, {"env_a": T.SUCCEEDED, "env_b": T.RUNNING, "env_c": T.PENDING})

    body = viewer_client.get("/api/deployment/status").json()

    assert [c["coordination_id"] for c in body["active"]] == ["deploy_now"]
    assert body["active"][0]["progress"] == {
        "total": 3,
        "done": 1,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "running": 1,
        "pending": 1,
    }
    assert "output_tail" not in body["active"][0]["environments"][0]


def test_status_lists_the_environments_that_need_attention_with_their_last_outcome(viewer_client, environments):
    make_coordination("deploy_old", C.FAILED, {"env_a": T.FAILED, "env_c": T.FAILED})
    make_coordination("deploy_new", C.COMPLETED, {"env_a": T.SUCCEEDED})
    make_coordination("deploy_now", C.LOCAL_DEPLOYING, {"env_a": T.RUNNING, "env_b": T.RUNNING})
    RemoteEnvironment.objects.filter(environment_id="env_a").update(
        last_health="healthy", last_health_at=timezone.now(), last_health_detail="GET /health: 200"
    )
    RemoteEnvironment.objects.filter(environment_id="env_b").update(
        last_health="unhealthy", last_health_at=timezone.now(), last_health_detail="connection refused"
    )

    body = viewer_client.get("/api/deployment/status").json()

    # env_a: healthy, and its last run that ended (not the running one) succeeded: fine.
    # The unhealthy first, then those whose last run failed.
    assert [env["environment_id"] for env in body["environments"]] == ["env_b", "env_c"]
    env_b, env_c = body["environments"]
    assert (env_b["last_health"], env_b["last_health_detail"], env_b["last_deployment"]) == (
        "unhealthy",
        "connection refused",
        None,
    )
    assert (env_c["last_deployment"]["coordination_id"], env_c["last_deployment"]["status"]) == ("deploy_old", "failed")
    assert body["attention_count"] == 2
    assert body["environment_counts"] == {
        "total": 3,
        "enabled": 3,
        "health": {"healthy": 1, "unhealthy": 1, "unknown": 1},
    }
    assert body["environments_url"] == "http://testserver/api/deployment/environments"
    assert body["active_count"] == 1


def test_status_of_one_coordination_is_that_coordination_in_full(viewer_client, environments):
    make_coordination("deploy_one", C.FAILED, {"env_a": T.FAILED})
    body = viewer_client.get("/api/deployment/status?coordination_id=deploy_one").json()
    assert body["coordination_id"] == "deploy_one"
    assert body["environments"][0]["status"] == "failed"
    assert "output_tail" in body["environments"][0]


class TestHistory:
    @pytest.fixture
    def runs(self, environments):
        now = timezone.now()
        rows = [
            ("deploy_1", C.COMPLETED, {"env_a": T.SUCCEEDED}, "v1", 5),
            ("deploy_2", C.FAILED, {"env_a": T.SUCCEEDED, "env_b": T.FAILED}, "v2", 4),
            ("deploy_3", C.CANCELLED, {"env_c": T.CANCELLED}, "v2", 3),
            ("deploy_4", C.COMPLETED, {"env_b": T.SUCCEEDED}, "v3", 2),
            ("deploy_5", C.LOCAL_DEPLOYING, {"env_a": T.RUNNING}, "v3", 1),
        ]
        for coordination_id, status, targets, version, hours_ago in rows:
            make_coordination(coordination_id, status, targets, version=version)
            Coordination.objects.filter(coordination_id=coordination_id).update(
                created_at=now - timedelta(hours=hours_ago)
            )
        return now

    def ids(self, client, query=""):
        response = client.get(f"{HISTORY}{query}")
        assert response.status_code == 200, response.content
        return [c["coordination_id"] for c in response.json()["results"]]

    def test_history_is_finished_coordinations_newest_first(self, viewer_client, runs):
        assert self.ids(viewer_client) == ["deploy_4", "deploy_3", "deploy_2", "deploy_1"]

    def test_history_filters_by_status_environment_version_and_time(self, viewer_client, runs):
        since = (runs - timedelta(hours=3, minutes=30)).isoformat()
        until = (runs - timedelta(hours=2, minutes=30)).isoformat()
        assert self.ids(viewer_client, "?status=completed") == ["deploy_4", "deploy_1"]
        assert self.ids(viewer_client, "?status=failed&status=cancelled") == ["deploy_3", "deploy_2"]
        assert self.ids(viewer_client, "?environment=env_b") == ["deploy_4", "deploy_2"]
        assert self.ids(viewer_client, "?version=v2") == ["deploy_3", "deploy_2"]
        assert self.ids(viewer_client, "?" + urlencode({"created_after": since})) == ["deploy_4", "deploy_3"]
        assert self.ids(viewer_client, "?" + urlencode({"created_after": since, "created_before": until})) == [
            "deploy_3"
        ]

    def test_filtering_by_environment_keeps_every_environment_of_a_run(self, viewer_client, runs):
        (record,) = viewer_client.get(f"{HISTORY}?environment=env_b&version=v2").json()["results"]
        assert [env["environment_id"] for env in record["environments"]] == ["env_a", "env_b"]
        assert record["progress"]["total"] == 2

    def test_limit_and_cursor_page_through_history(self, viewer_client, runs):
        first = viewer_client.get(f"{HISTORY}?limit=3").json()
        assert [c["coordination_id"] for c in first["results"]] == ["deploy_4", "deploy_3", "deploy_2"]
        second = viewer_client.get(first["next"]).json()
        assert [c["coordination_id"] for c in second["results"]] == ["deploy_1"]
        assert second["next"] is None

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("?limit=0", "limit"),
            ("?limit=abc", "limit"),
            ("?limit=501", "limit"),
            ("?status=running", "status"),
            ("?cursor=E", "cursor"),
        ],
    )
    def test_a_bad_filter_or_limit_is_400_naming_it(self, viewer_client, runs, query, field):
        response = viewer_client.get(f"{HISTORY}{query}")
        assert response.status_code == 400
        assert list(response.json()) == [field]
