"""coordinations/<id>/, its events, cancel and retry."""

import pytest

from deployments.models import Coordination, CoordinationStatus as C, StageEvent, TargetStatus as T
from tests.factories import make_coordination, make_environment

BASE = "/api/deployment/coordinations"


@pytest.fixture
def environments(db):
    for name in ("env_a", "env_b", "env_c", "env_d"):
        make_environment(name)


def test_a_coordination_in_full_shows_every_environment_and_its_output(viewer_client, environments):
    coordination = make_coordination(
        "deploy_full", C.FAILED, {"env_a": T.SUCCEEDED, "env_b": T.FAILED}, version="v1", error="1 of 2 failed"
    )
    coordination.targets.filter(environment_id="env_b").update(output_tail="step 3 failed\n", output_bytes=14)

    response = viewer_client.get(f"{BASE}/deploy_full/")

    assert response.status_code == 200
    body = response.json()
    assert (body["coordination_id"], body["status"], body["version"], body["error"]) == (
        "deploy_full",
        "failed",
        "v1",
        "1 of 2 failed",
    )
    assert body["progress"] == {
        "total": 2,
        "done": 2,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
        "running": 0,
        "pending": 0,
    }
    env_b = body["environments"][1]
    assert (env_b["environment_id"], env_b["status"], env_b["reason"], env_b["exit_code"]) == (
        "env_b",
        "failed",
        "exit_code",
        1,
    )
    assert env_b["output_tail"] == "step 3 failed\n"
    assert body["events_url"] == "http://testserver/api/deployment/coordinations/deploy_full/events/"


def test_an_unknown_coordination_is_404(viewer_client, db):
    for path in ("/", "/events/"):
        assert viewer_client.get(f"{BASE}/deploy_nope{path}").status_code == 404
    assert viewer_client.get("/api/deployment/status?coordination_id=deploy_nope").status_code == 404


class TestEvents:
    def test_events_after_a_cursor_are_only_the_new_ones(self, viewer_client, environments):
        coordination = make_coordination("deploy_ev", C.LOCAL_DEPLOYING, {"env_a": T.RUNNING, "env_b": T.RUNNING})
        first = viewer_client.get(f"{BASE}/deploy_ev/events/").json()
        assert [event["environment_id"] for event in first["events"]] == ["env_a", "env_b"]
        assert (first["finished"], first["has_more"], first["coordination_status"]) == (False, False, "local_deploying")

        StageEvent.objects.create(coordination=coordination, stage="run", message="one more")
        second = viewer_client.get(f"{BASE}/deploy_ev/events/?after={first['next_after']}").json()
        third = viewer_client.get(f"{BASE}/deploy_ev/events/?after={second['next_after']}").json()

        assert [event["message"] for event in second["events"]] == ["one more"]
        assert second["next_after"] > first["next_after"]
        assert third["events"] == []
        assert third["next_after"] == second["next_after"]

    def test_a_limit_pages_the_events(self, viewer_client, environments):
        make_coordination("deploy_many", C.FAILED, {name: T.FAILED for name in ("env_a", "env_b", "env_c")})
        page = viewer_client.get(f"{BASE}/deploy_many/events/?limit=2").json()
        rest = viewer_client.get(f"{BASE}/deploy_many/events/?limit=2&after={page['next_after']}").json()
        assert (len(page["events"]), page["has_more"], page["finished"]) == (2, True, True)
        assert (len(rest["events"]), rest["has_more"]) == (1, False)

    def test_a_cancelled_run_is_finished_only_when_its_environments_have_ended(self, viewer_client, environments):
        coordination = make_coordination("deploy_c", C.CANCELLED, {"env_a": T.RUNNING, "env_b": T.CANCELLED})
        assert viewer_client.get(f"{BASE}/deploy_c/events/").json()["finished"] is False
        coordination.targets.filter(environment_id="env_a").update(status=T.CANCELLED)
        assert viewer_client.get(f"{BASE}/deploy_c/events/").json()["finished"] is True

    @pytest.mark.parametrize(("query", "field"), [("after=-1", "after"), ("after=x", "after"), ("limit=0", "limit")])
    def test_a_bad_cursor_or_limit_is_400_naming_it(self, viewer_client, environments, query, field):
        make_coordination("deploy_q", C.FAILED, {"env_a": T.FAILED})
        response = viewer_client.get(f"{BASE}/deploy_q/events/?{query}")
        assert response.status_code == 400
        assert list(response.json()) == [field]


class TestCancel:
    def test_cancel_stops_the_coordination_and_its_pending_environments(self, admin_client_api, environments):
        make_coordination("deploy_run", C.LOCAL_TRIGGERING, {"env_a": T.RUNNING, "env_b": T.PENDING, "env_c": T.FAILED})

        response = admin_client_api.post(f"{BASE}/deploy_run/cancel/")

        assert response.status_code == 200, response.content
        body = response.json()
        assert body["status"] == "cancelled"
        assert body["error"] == "cancelled by operator"
        statuses = {env["environment_id"]: env["status"] for env in body["environments"]}
        # The running one is hung up by the coordinator running it (see the end-to-end test).
        assert statuses == {"env_a": "running", "env_b": "cancelled", "env_c": "failed"}
        coordination = Coordination.objects.get(coordination_id="deploy_run")
        assert coordination.finished_at is not None
        moves = list(
            coordination.events.filter(old_status__in=["local_triggering", "pending"]).values_list(
                "environment_id", "old_status", "new_status"
            )
        )
        assert ("", "local_triggering", "cancelled") in moves
        assert ("env_b", "pending", "cancelled") in moves

    @pytest.mark.parametrize("status", [C.COMPLETED, C.FAILED, C.CANCELLED])
    def test_cancelling_an_ended_coordination_is_409_naming_its_status(self, admin_client_api, environments, status):
        make_coordination("deploy_done", status, {"env_a": T.SUCCEEDED})
        events = StageEvent.objects.count()

        response = admin_client_api.post(f"{BASE}/deploy_done/cancel/")

        assert response.status_code == 409
        assert response.json() == {
            "detail": f"coordination deploy_done has already ended: it is {status}",
            "status": status,
        }
        assert StageEvent.objects.count() == events


class TestRetry:
    def test_retry_runs_only_the_environments_that_did_not_succeed(self, admin_client_api, environments):
        make_coordination(
            "deploy_first",
            C.FAILED,
            {"env_a": T.SUCCEEDED, "env_b": T.FAILED, "env_c": T.CANCELLED, "env_d": T.INTERRUPTED},
            version="v7",
            ec2_instance_id="i-0123456789abcdef0",
            ec2_public_ip="127.0.0.7",
        )

        response = admin_client_api.post(f"{BASE}/deploy_first/retry/")

        assert response.status_code == 202, response.content
        body = response.json()
        assert body["retry_of"] == "deploy_first"
        assert body["environments"] == ["env_b", "env_c", "env_d"]
        retry = Coordination.objects.get(coordination_id=body["coordination_id"])
        assert retry.retry_of.coordination_id == "deploy_first"
        assert (retry.version, retry.ec2_instance_id, retry.ec2_public_ip) == ("v7", "i-0123456789abcdef0", "127.0.0.7")
        assert (retry.triggered_by, retry.triggered_by_user) == ("api", admin_client_api.user)
        assert retry.events.filter(message="retry of deploy_first for 3 environments").exists()
        detail = admin_client_api.get(f"{BASE}/{retry.coordination_id}/").json()
        assert detail["retry_of"] == "deploy_first"

    def test_environments_deleted_since_are_left_out(self, admin_client_api, environments):
        make_coordination("deploy_first", C.FAILED, {"env_a": T.FAILED, "env_b": T.FAILED})
        assert admin_client_api.delete("/api/deployment/environments/env_a/").status_code == 204

        response = admin_client_api.post(f"{BASE}/deploy_first/retry/")

        assert response.json()["environments"] == ["env_b"]

    def test_nothing_to_retry_is_400(self, admin_client_api, environments):
        make_coordination("deploy_ok", C.COMPLETED, {"env_a": T.SUCCEEDED})
        response = admin_client_api.post(f"{BASE}/deploy_ok/retry/")
        assert response.status_code == 400
        assert "nothing to retry" in response.json()["environments"][0]
        assert Coordination.objects.count() == 1

    def test_retrying_a_running_coordination_is_409(self, admin_client_api, environments):
        make_coordination("deploy_busy", C.LOCAL_DEPLOYING, {"env_a": T.RUNNING})
        response = admin_client_api.post(f"{BASE}/deploy_busy/retry/")
        assert response.status_code == 409
        assert response.json()["status"] == "local_deploying"
        assert Coordination.objects.count() == 1

    def test_an_environment_disabled_since_is_400_naming_it(self, admin_client_api, environments):
        make_coordination("deploy_first", C.FAILED, {"env_a": T.FAILED})
        patched = admin_client_api.patch("/api/deployment/environments/env_a/", {"enabled": False}, format="json")
        assert patched.status_code == 200
        response = admin_client_api.post(f"{BASE}/deploy_first/retry/")
        assert response.status_code == 400
        assert response.json() == {"environments": ["disabled environment(s): env_a"]}
