import json

import pytest
from django.core.management import CommandError, call_command

from deployments.models import CoordinationStatus as C, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from deployments.transitions import transition
from tests.factories import make_coordination

pytestmark = pytest.mark.django_db


def finish(coordination, status):
    for step in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING, C.LOCAL_COMPLETED):
        transition(coordination, step)
    for target in coordination.targets.all():
        transition(target, T.TRIGGERING)
        transition(target, T.FAILED if status == C.FAILED else T.RUNNING, fields={"reason": "exit_code"})
        if status == C.COMPLETED:
            transition(target, T.SUCCEEDED, fields={"exit_code": 0})
    transition(coordination, status, fields={"error": "boom" if status == C.FAILED else ""})


@pytest.fixture
def three_coordinations(make_ssh_environment):
    make_ssh_environment("env_a", "./init_aicore.sh")
    done = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_done", version="v1")
    finish(done, C.COMPLETED)
    failed = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_failed", version="v2")
    finish(failed, C.FAILED)
    coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_active", version="v3")


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_status_without_id_lists_only_active_coordinations(three_coordinations):
    records = json.loads(run("deployment_status", "--json"))
    assert [r["coordination_id"] for r in records] == ["deploy_active"]
    assert "deploy_active" in run("deployment_status")


def test_status_of_one_coordination_shows_each_environment(three_coordinations):
    record = json.loads(run("deployment_status", "deploy_failed", "--json"))
    assert record["status"] == C.FAILED
    assert record["error"] == "boom"
    assert [(e["environment_id"], e["status"], e["reason"]) for e in record["environments"]] == [
        ("env_a", T.FAILED, "exit_code")
    ]
    text = run("deployment_status", "deploy_failed")
    assert "deploy_failed: failed" in text
    assert "env_a" in text


def test_status_of_an_unknown_coordination_exits_2(three_coordinations):
    with pytest.raises(CommandError) as caught:
        run("deployment_status", "deploy_nope")
    assert caught.value.returncode == 2
    assert "deploy_nope" in str(caught.value)


def test_history_lists_finished_coordinations_newest_first_up_to_the_limit(three_coordinations):
    records = json.loads(run("deployment_history", "--json"))
    assert [r["coordination_id"] for r in records] == ["deploy_failed", "deploy_done"]
    limited = json.loads(run("deployment_history", "--limit", "1", "--json"))
    assert [r["coordination_id"] for r in limited] == ["deploy_failed"]


def test_history_rejects_a_limit_beyond_its_bound(three_coordinations):
    with pytest.raises(CommandError) as caught:
        run("deployment_history", "--limit", str(10**30))
    assert "--limit" in str(caught.value) and "10000" in str(caught.value)


def test_history_rejects_a_limit_below_one(three_coordinations):
    with pytest.raises(CommandError) as caught:
        run("deployment_history", "--limit", "0")
    assert "--limit" in str(caught.value)


def test_status_json_shows_an_agents_refusal_without_its_body(refused_by_agent):
    record = json.loads(run("deployment_status", "deploy_refused", "--json"))

    target = record["environments"][0]
    assert "HTTP 500" in target["error"]
    assert "hunter2-c4f1" not in json.dumps(record)


def test_status_json_shows_user_data_only_as_its_size(db):
    config = {"image_id": "ami-0123456789abcdef0", "instance_type": "t3.micro", "user_data": "PASSWORD=x-91c2"}
    make_coordination("deploy_ud", C.COMPLETED, {}, ec2_deployment_config=config)

    record = json.loads(run("deployment_status", "deploy_ud", "--json"))

    assert record["ec2_deployment_config"]["user_data"] == "set (15 bytes)"
