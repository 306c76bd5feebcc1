"""The rollout over the API: `rollout` in the trigger body (validated by the rollout's one
rule, errors nested under `rollout`), the 409 of `concurrency: reject`, the approve
endpoint, and the rollout's fields on a coordination's record."""

import hashlib
import json

import pytest
from django.core.exceptions import ValidationError

from deployments.api.views import TriggerLocalView
from deployments.models import Coordination, CoordinationStatus as C, CoordinationTarget, StageEvent, TargetStatus as T
from environments.models import SettingsBlock
from powerautomation.api import field_errors
from tests.factories import make_coordination, make_environment, make_user, token_client

TRIGGER = "/api/deployment/trigger-local"
BASE = "/api/deployment/coordinations"
KNOWN = "unknown rollout setting; known: batch_size, max_failures, pause_after_first_batch, batch_pause_seconds, "
KNOWN += "concurrency"
NOT_AN_OBJECT = "must be a JSON object of rollout settings"


@pytest.fixture
def environments(db):
    return [make_environment(f"env_{n}").environment_id for n in range(4)]


def counts() -> tuple[int, int, int]:
    return Coordination.objects.count(), CoordinationTarget.objects.count(), StageEvent.objects.count()


# --- The trigger's `rollout` --------------------------------------------------------------


def test_a_rollout_is_stored_with_its_waves_and_budget_and_shown_on_the_record(admin_client_api, environments):
    rollout = {"batch_size": [1, "25%"], "max_failures": 2, "pause_after_first_batch": "approval"}

    response = admin_client_api.post(TRIGGER, {"rollout": rollout}, format="json")

    assert response.status_code == 202, response.content
    coordination = Coordination.objects.get()
    plan = {
        **rollout,
        "batch_pause_seconds": 0,
        "concurrency": "queue",
        "waves": [1, 1, 1, 1],
        "failure_budget": 2,
    }
    assert coordination.rollout == plan
    record = admin_client_api.get(f"{BASE}/{coordination.coordination_id}/").json()
    assert record["rollout"] == plan
    assert (record["wave"], record["approved_at"], record["approved_by"]) == (0, None, None)
    assert [(env["environment_id"], env["wave"], env["waiting_for"]) for env in record["environments"]] == [
        ("env_0", 1, ""),
        ("env_1", 2, ""),
        ("env_2", 3, ""),
        ("env_3", 4, ""),
    ]


def test_the_documented_canary_then_25_percent_example_resolves_as_documented(admin_client_api, db):
    """docs/api.md: with 20 targets, waves [1, 5, 5, 5, 4] and a failure budget of 2."""
    for n in range(20):
        make_environment(f"env_{n:02}")
    body = {"rollout": {"batch_size": [1, "25%"], "max_failures": 2, "pause_after_first_batch": "approval"}}

    response = admin_client_api.post(TRIGGER, body, format="json")

    assert response.status_code == 202, response.content
    plan = admin_client_api.get(f"{BASE}/{response.json()['coordination_id']}/").json()["rollout"]
    assert (plan["waves"], plan["failure_budget"]) == ([1, 5, 5, 5, 4], 2)


def test_keys_left_out_or_null_take_the_config_files_defaults(admin_client_api, environments):
    SettingsBlock.objects.create(name="deployment_settings", values={"batch_size": 2, "max_failures": 3})

    response = admin_client_api.post(TRIGGER, {"rollout": {"max_failures": "50%"}}, format="json")
    assert response.status_code == 202, response.content
    plan = Coordination.objects.get(coordination_id=response.json()["coordination_id"]).rollout
    assert (plan["batch_size"], plan["waves"], plan["failure_budget"]) == ([2], [2, 2], 2)

    for body in ({}, {"rollout": None}, {"rollout": {}}):
        response = admin_client_api.post(TRIGGER, body, format="json")
        assert response.status_code == 202, response.content
        plan = Coordination.objects.get(coordination_id=response.json()["coordination_id"]).rollout
        assert (plan["waves"], plan["failure_budget"]) == ([2, 2], 3), body

    response = admin_client_api.post(TRIGGER, {"rollout": {"batch_size": None}}, format="json")
    plan = Coordination.objects.get(coordination_id=response.json()["coordination_id"]).rollout
    assert plan["waves"] == [4]  # null: unset, one wave of everything


@pytest.mark.parametrize(
    ("rollout", "errors"),
    [
        ({"batch_size": [0]}, {"batch_size": ["element 1: must be from 1 to 100000, not 0"]}),
        ({"batch_size": "150%"}, {"batch_size": ["a percentage must be from 1% to 100%, not '150%'"]}),
        ({"max_failures": -1}, {"max_failures": ["must be from 0 to 100000, not -1"]}),
        ({"batch_size": True}, {"batch_size": ['must be a whole number or a percentage such as "25%", not True']}),
        ({"batch_size": [1] * 1000}, {"batch_size": ["a list of wave sizes must have 1 to 20 elements"]}),
        ({"batch_size": []}, {"batch_size": ["a list of wave sizes must have 1 to 20 elements"]}),
        ({"batch_size": 10**12}, {"batch_size": ["must be from 1 to 100000, not 1000000000000"]}),
        ({"batch_size": 1.5}, {"batch_size": ['must be a whole number or a percentage such as "25%", not 1.5']}),
        (
            {"batch_size": [1, [2]]},
            {"batch_size": ['element 2: must be a whole number or a percentage such as "25%", not [2]']},
        ),
        ({"max_failures": "101%"}, {"max_failures": ["a percentage must be from 0% to 100%, not '101%'"]}),
        (
            {"pause_after_first_batch": "later"},
            {
                "pause_after_first_batch": [
                    "must be \"approval\" or a whole number of seconds from 0 to 86400, not 'later'"
                ]
            },
        ),
        (
            {"batch_pause_seconds": 86401},
            {"batch_pause_seconds": ["must be a whole number of seconds from 0 to 86400 (a day), not 86401"]},
        ),
        ({"concurrency": "parallel"}, {"concurrency": ["must be one of queue, reject, supersede, not 'parallel'"]}),
        ({"speed": "fast"}, {"speed": [KNOWN]}),
        (
            {"batch_size": 0, "max_failures": -1, "serial": 1},
            {
                "batch_size": ["must be from 1 to 100000, not 0"],
                "max_failures": ["must be from 0 to 100000, not -1"],
                "serial": [KNOWN],
            },
        ),
    ],
    ids=[
        "wave-0",
        "150%",
        "negative-budget",
        "true",
        "1000-waves",
        "no-waves",
        "10^12",
        "float",
        "list-in-list",
        "101%-budget",
        "pause-word",
        "pause-over-a-day",
        "concurrency",
        "unknown-key",
        "several",
    ],
)
def test_a_bad_rollout_is_400_naming_the_key_under_rollout_and_creates_nothing(
    admin_client_api, environments, rollout, errors
):
    response = admin_client_api.post(TRIGGER, {"rollout": rollout}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"rollout": errors}
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize("rollout", [[1], "fast", 3, True])
def test_a_rollout_that_is_not_an_object_is_400_naming_rollout(admin_client_api, environments, rollout):
    response = admin_client_api.post(TRIGGER, {"rollout": rollout}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"rollout": [NOT_AN_OBJECT]}
    assert counts() == (0, 0, 0)


def test_a_rollout_nested_100_deep_is_refused_by_the_body_reader(admin_client_api, environments):
    for nested in ('{"batch_size": ' + "[" * 100 + "1" + "]" * 100 + "}", '{"x": ' * 100 + "1" + "}" * 100):
        response = admin_client_api.post(TRIGGER, '{"rollout": ' + nested + "}", content_type="application/json")

        assert response.status_code == 400, response.content
        assert "nested deeper than 64 levels" in response.json()["detail"]
    assert counts() == (0, 0, 0)


def test_a_rollout_nested_within_the_readers_bound_is_400_naming_the_key(admin_client_api, environments):
    body = '{"rollout": {"batch_size": ' + "[" * 40 + "1" + "]" * 40 + ', "x": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}}"

    response = admin_client_api.post(TRIGGER, body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert sorted(response.json()["rollout"]) == ["batch_size", "x"]
    assert response.json()["rollout"]["x"] == [KNOWN]
    assert counts() == (0, 0, 0)


def test_a_bad_rollout_and_an_unknown_tag_are_each_400_naming_their_field(admin_client_api, environments):
    unknown_tag = admin_client_api.post(TRIGGER, {"tags": ["nosuch"], "rollout": {"batch_size": 1}}, format="json")
    bad_rollout = admin_client_api.post(TRIGGER, {"tags": ["nosuch"], "rollout": {"batch_size": 0}}, format="json")

    assert (unknown_tag.status_code, list(unknown_tag.json())) == (400, ["tags"])
    assert "unknown tag(s): nosuch" in unknown_tag.json()["tags"][0]
    assert (bad_rollout.status_code, list(bad_rollout.json())) == (400, ["rollout"])
    assert counts() == (0, 0, 0)


def test_the_services_rollout_errors_come_out_nested_as_the_serializers_do():
    """The service validates too (the same rule): its errors, keyed `rollout.<key>`, are
    placed under `rollout` by the view's field_paths."""
    error = ValidationError({"rollout.batch_size": ["element 1: ..."], "version": ["bad"]})

    assert field_errors(error, TriggerLocalView.field_paths) == {
        "rollout": {"batch_size": ["element 1: ..."]},
        "version": ["bad"],
    }


def test_a_request_without_rollout_keeps_its_idempotency_fingerprint(admin_client_api, environments):
    """Stored keys from before rollouts existed still match their replays."""
    response = admin_client_api.post(TRIGGER, {"version": "v1"}, format="json", HTTP_IDEMPOTENCY_KEY="ci-1")

    assert response.status_code == 202
    arguments = {
        "triggered_by": "api",
        "environment_ids": None,
        "coordination_id": "",
        "version": "v1",
        "ec2_instance_id": "",
        "ec2_public_ip": "",
        "ec2_deployment_config": None,
    }
    before_rollouts = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()
    assert Coordination.objects.get().idempotency_fingerprint == before_rollouts


def test_a_replayed_idempotency_key_with_another_rollout_is_422(admin_client_api, environments):
    def post(rollout):
        return admin_client_api.post(TRIGGER, {"rollout": rollout}, format="json", HTTP_IDEMPOTENCY_KEY="key-r")

    first, again, other = post({"batch_size": 1}), post({"batch_size": 1}), post({"batch_size": 2})

    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 422)
    assert Coordination.objects.count() == 1


# --- concurrency: reject -------------------------------------------------------------------


@pytest.fixture
def holder(environments):
    """A running coordination holding env_0 (running) and env_1 (not started yet)."""
    return make_coordination("deploy_holder", C.LOCAL_DEPLOYING, {"env_0": T.RUNNING, "env_1": T.PENDING})


@pytest.mark.parametrize("idempotency_key", ["", "ci-job-7"])
def test_reject_over_busy_environments_is_409_naming_each_and_its_holder(admin_client_api, holder, idempotency_key):
    before = counts()
    headers = {"HTTP_IDEMPOTENCY_KEY": idempotency_key} if idempotency_key else {}

    response = admin_client_api.post(TRIGGER, {"rollout": {"concurrency": "reject"}}, format="json", **headers)

    assert response.status_code == 409, response.content
    assert response.json() == {
        "detail": "environment(s) busy in another running coordination: "
        "env_0 (in deploy_holder), env_1 (in deploy_holder)",
        "busy": [
            {"environment_id": "env_0", "coordination_id": "deploy_holder"},
            {"environment_id": "env_1", "coordination_id": "deploy_holder"},
        ],
    }
    assert counts() == before
    assert not Coordination.objects.exclude(idempotency_key="").exists()


def test_reject_over_free_environments_and_queue_over_busy_ones_start(admin_client_api, holder):
    free = admin_client_api.post(
        TRIGGER, {"environments": ["env_2", "env_3"], "rollout": {"concurrency": "reject"}}, format="json"
    )
    queued = admin_client_api.post(TRIGGER, {"rollout": {"concurrency": "queue"}}, format="json")

    assert (free.status_code, queued.status_code) == (202, 202)
    assert Coordination.objects.count() == 3


# --- Approve -----------------------------------------------------------------------------------


@pytest.fixture
def awaiting(environments):
    plan = {
        "batch_size": [1, "100%"],
        "max_failures": None,
        "pause_after_first_batch": "approval",
        "batch_pause_seconds": 0,
        "concurrency": "queue",
        "waves": [1, 3],
        "failure_budget": None,
    }
    coordination = make_coordination(
        "deploy_gate",
        C.AWAITING_APPROVAL,
        {"env_0": T.SUCCEEDED, "env_1": T.PENDING, "env_2": T.PENDING, "env_3": T.PENDING},
        rollout=plan,
        wave=1,
    )
    coordination.targets.exclude(environment_id="env_0").update(wave=2)
    return coordination


def test_an_admin_approves_a_rollout_awaiting_approval(admin_client_api, awaiting):
    response = admin_client_api.post(f"{BASE}/deploy_gate/approve/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["approved_by"], body["wave"]) == ("local_deploying", "operator", 1)
    assert body["approved_at"] is not None
    assert body["rollout"]["waves"] == [1, 3]
    assert [env["wave"] for env in body["environments"]] == [1, 2, 2, 2]
    assert "events_url" in body  # the coordination in full
    awaiting.refresh_from_db()
    assert (awaiting.status, awaiting.approved_by) == (C.LOCAL_DEPLOYING, admin_client_api.user)
    event = StageEvent.objects.get(coordination=awaiting, old_status=C.AWAITING_APPROVAL)
    assert (event.new_status, event.data) == (C.LOCAL_DEPLOYING, {"approved_by": "operator"})
    history = admin_client_api.get("/api/deployment/status").json()["active"]
    assert [(c["coordination_id"], c["approved_by"]) for c in history] == [("deploy_gate", "operator")]


@pytest.mark.parametrize("status", [C.LOCAL_DEPLOYING, C.COMPLETED, C.CANCELLED])
def test_approving_a_coordination_not_awaiting_approval_is_409_naming_its_status(
    admin_client_api, environments, status
):
    make_coordination("deploy_other", status, {"env_0": T.SUCCEEDED})
    before = counts()

    response = admin_client_api.post(f"{BASE}/deploy_other/approve/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"coordination deploy_other is {status}, not awaiting approval",
        "status": status,
    }
    assert counts() == before
    assert Coordination.objects.get().approved_at is None


def test_a_second_approval_is_409(admin_client_api, awaiting):
    assert admin_client_api.post(f"{BASE}/deploy_gate/approve/").status_code == 200
    again = admin_client_api.post(f"{BASE}/deploy_gate/approve/")
    assert (again.status_code, again.json()["status"]) == (409, "local_deploying")


def test_approving_an_unknown_coordination_is_404(admin_client_api, db):
    assert admin_client_api.post(f"{BASE}/deploy_nope/approve/").status_code == 404


@pytest.mark.parametrize(
    ("who", "code"),
    [("anonymous", 401), ("viewer", 403), ("no role", 403)],
)
def test_only_an_admin_may_approve(clients, awaiting, who, code):
    client = clients.get(who) or token_client(make_user("nobody"))
    before = counts()

    response = client.post(f"{BASE}/deploy_gate/approve/")

    assert response.status_code == code, response.content
    assert counts() == before
    assert Coordination.objects.get().status == C.AWAITING_APPROVAL


def test_a_viewer_may_not_trigger_with_a_rollout(viewer_client, environments):
    response = viewer_client.post(TRIGGER, {"rollout": {"batch_size": 1}}, format="json")

    assert response.status_code == 403
    assert counts() == (0, 0, 0)


# --- The record's rollout fields ------------------------------------------------------------


def test_a_coordination_from_before_rollouts_shows_one_wave_of_every_target_and_no_budget(viewer_client, environments):
    make_coordination("deploy_old", C.COMPLETED, dict.fromkeys(environments, T.SUCCEEDED))
    assert Coordination.objects.get().rollout == {}

    record = viewer_client.get(f"{BASE}/deploy_old/").json()
    listed = viewer_client.get("/api/deployment/history").json()["results"][0]

    for shown in (record, listed):
        assert shown["rollout"] == {
            "batch_size": None,
            "max_failures": None,
            "pause_after_first_batch": None,
            "batch_pause_seconds": 0,
            "concurrency": "queue",
            "waves": [4],
            "failure_budget": None,
        }
        assert [env["wave"] for env in shown["environments"]] == [1, 1, 1, 1]


def test_lists_show_each_targets_wave_and_what_it_waits_for(viewer_client, holder):
    waiting = make_coordination("deploy_waiting", C.LOCAL_DEPLOYING, {"env_0": T.PENDING, "env_2": T.PENDING})
    waiting.targets.filter(environment_id="env_0").update(waiting_for="deploy_holder")
    waiting.targets.filter(environment_id="env_2").update(wave=2)

    active = viewer_client.get("/api/deployment/status").json()["active"]

    shown = {
        c["coordination_id"]: [(e["environment_id"], e["wave"], e["waiting_for"]) for e in c["environments"]]
        for c in active
    }
    assert shown["deploy_waiting"] == [("env_0", 1, "deploy_holder"), ("env_2", 2, "")]
