"""/api/agent/: a polling agent's requests, against the real views and database.

The agent as a real process against gunicorn and a qcluster is in
tests/deployments/test_polling_e2e.py; this file pins the platform's rules one by one."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.agent_runs import agent_run_offer, agent_runs_expire
from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    StageEvent,
    TargetStatus as T,
)
from deployments.script_output import output_read
from deployments.services import coordination_cancel
from environments.agent_tokens import new_token, token_hash
from environments.models import RemoteEnvironment
from tests.factories import make_coordination, make_environment

pytestmark = pytest.mark.django_db
TOKEN = new_token()
OTHER_TOKEN = new_token()


def polling_environment(environment_id="laptop", token=TOKEN, **fields) -> RemoteEnvironment:
    return make_environment(
        environment_id,
        connection_method="polling",
        host="",
        username="",
        ssh_key_path="",
        agent_token=token,
        **fields,
    )


def agent(token=TOKEN) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def offered(environment_id="laptop", coordination_id="deploy-1") -> CoordinationTarget:
    coordination = make_coordination(coordination_id, C.LOCAL_TRIGGERING, {environment_id: T.PENDING}, version="v2")
    target = coordination.targets.get()
    assert agent_run_offer(target, target.remote_environment)
    return target


def poll(client, environment_id="laptop"):
    return client.post("/api/agent/poll", {"environment_id": environment_id}, format="json")


def claim(client=None, environment_id="laptop") -> dict:
    answer = poll(client or agent(), environment_id)
    assert answer.status_code == 200, answer.content
    assert answer.json()["run"] is not None
    return answer.json()["run"]


def test_the_token_is_stored_only_as_its_hash():
    environment = polling_environment()
    row = RemoteEnvironment.objects.filter(pk=environment.pk).values().get()
    assert row["agent_token_hash"] == token_hash(TOKEN)
    assert TOKEN not in str(row)


def test_an_idle_poll_is_one_query_and_says_the_interval():
    polling_environment(poll_interval=7)
    client = agent()
    poll(client)  # the first poll writes the last-seen time
    with CaptureQueriesContext(connection) as queries:
        answer = poll(client)
    assert answer.json() == {"poll_interval": 7, "run": None}
    assert len(queries) == 1, [query["sql"] for query in queries]


def test_last_seen_is_written_at_most_once_per_one_and_a_half_intervals():
    environment = polling_environment(poll_interval=10)
    poll(agent())
    first = RemoteEnvironment.objects.get(pk=environment.pk).agent_seen_at
    assert first is not None
    poll(agent())
    assert RemoteEnvironment.objects.get(pk=environment.pk).agent_seen_at == first
    RemoteEnvironment.objects.filter(pk=environment.pk).update(agent_seen_at=first - timedelta(seconds=16))
    poll(agent())
    assert RemoteEnvironment.objects.get(pk=environment.pk).agent_seen_at > first


@pytest.mark.parametrize("header", ["", "Bearer ", f"Bearer {OTHER_TOKEN}", f"Token {TOKEN}", f"Bearer {TOKEN}x"])
def test_a_wrong_token_is_401_and_claims_nothing(header):
    polling_environment()
    target = offered()
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    answer = poll(client)
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == "Bearer"
    target.refresh_from_db()
    assert target.status == T.TRIGGERING and target.agent_run_id == ""


def test_another_environments_token_is_401_and_claims_nothing():
    polling_environment()
    polling_environment("desktop", token=OTHER_TOKEN)
    target = offered()
    answer = poll(agent(OTHER_TOKEN), "laptop")
    assert answer.status_code == 401
    target.refresh_from_db()
    assert target.status == T.TRIGGERING
    assert poll(agent(OTHER_TOKEN), "desktop").json()["run"] is None


def test_a_run_is_claimed_by_exactly_one_poll():
    polling_environment()
    target = offered()
    first, second = poll(agent()), poll(agent())
    runs = [answer.json()["run"] for answer in (first, second)]
    assert sum(run is not None for run in runs) == 1
    run = next(run for run in runs if run)
    assert run["environment"] == {
        "EC2_INSTANCE_ID": "",
        "EC2_PUBLIC_IP": "",
        "DEPLOYMENT_VERSION": "v2",
        "COORDINATION_ID": "deploy-1",
        "ENVIRONMENT_ID": "laptop",
    }
    target.refresh_from_db()
    assert target.status == T.RUNNING and target.agent_run_id == run["run_id"]


def test_output_is_kept_once_whatever_is_resent():
    polling_environment()
    target = offered()
    run = claim()
    url = f"/api/agent/runs/{run['run_id']}/output"
    client = agent()
    assert client.post(url, {"offset": 0, "text": "héllo\n"}, format="json").json()["offset"] == 7
    # The same chunk again (its answer was lost), then one overlapping, then a gap.
    assert client.post(url, {"offset": 0, "text": "héllo\n"}, format="json").json()["offset"] == 7
    assert client.post(url, {"offset": 4, "text": "lo\nworld\n"}, format="json").json()["offset"] == 13
    gap = client.post(url, {"offset": 20, "text": "lost?\n"}, format="json")
    assert gap.status_code == 409 and gap.json()["offset"] == 13
    target.refresh_from_db()
    assert target.output_tail == "héllo\nworld\n"
    assert target.output_bytes == 13


def test_the_agents_token_and_nul_characters_never_reach_the_stored_output():
    polling_environment()
    target = offered()
    run = claim()
    url = f"/api/agent/runs/{run['run_id']}/output"
    client = agent()
    first = f"token={TOKEN[:10]}"
    assert client.post(url, {"offset": 0, "text": first}, format="json").json()["offset"] == len(first)
    second = f"{TOKEN[10:]} \x00 done\n"
    # The agent's offsets count what it sent: the masking and the NUL's replacement do not shift them.
    answer = client.post(url, {"offset": len(first), "text": second}, format="json")
    assert answer.status_code == 200 and answer.json()["offset"] == len(first) + len(second.encode())
    result = client.post(f"/api/agent/runs/{run['run_id']}/result", {"exit_code": 0, "offset": 9999}, format="json")
    assert result.status_code == 409
    target.refresh_from_db()
    assert output_read(target).text == "token=*** \ufffd done\n"
    assert TOKEN[:10] not in target.output_tail


def test_the_result_waits_for_all_output_then_ends_the_run():
    polling_environment()
    target = offered()
    run = claim()
    client = agent()
    client.post(f"/api/agent/runs/{run['run_id']}/output", {"offset": 0, "text": "ok\n"}, format="json")
    early = client.post(f"/api/agent/runs/{run['run_id']}/result", {"exit_code": 0, "offset": 10}, format="json")
    assert early.status_code == 409 and early.json()["offset"] == 3
    done = client.post(f"/api/agent/runs/{run['run_id']}/result", {"exit_code": 3, "offset": 3}, format="json")
    assert done.json() == {"recorded": True, "status": "failed"}
    target.refresh_from_db()
    assert (target.status, target.exit_code, target.reason) == (T.FAILED, 3, "exit_code")
    again = client.post(f"/api/agent/runs/{run['run_id']}/result", {"exit_code": 3, "offset": 3}, format="json")
    assert again.json() == {"recorded": False, "status": "failed"}


def test_a_cancel_reaches_the_agent_on_its_next_heartbeat():
    polling_environment()
    target = offered()
    run = claim()
    heartbeat = f"/api/agent/runs/{run['run_id']}/heartbeat"
    assert agent().post(heartbeat, {}, format="json").json()["stop"] is False
    coordination_cancel(coordination=target.coordination, actor="test")
    answer = agent().post(heartbeat, {}, format="json").json()
    assert answer["stop"] is True and "cancelled" in answer["stop_reason"]
    target.refresh_from_db()
    assert target.status == T.CANCELLED
    # The script's last words after the cancel are kept.
    agent().post(f"/api/agent/runs/{run['run_id']}/output", {"offset": 0, "text": "bye\n"}, format="json")
    target.refresh_from_db()
    assert target.output_tail == "bye\n"


def test_another_environments_agent_cannot_report_on_a_run():
    polling_environment()
    polling_environment("desktop", token=OTHER_TOKEN)
    offered()
    run = claim()
    answer = agent(OTHER_TOKEN).post(f"/api/agent/runs/{run['run_id']}/result", {"exit_code": 0, "offset": 0})
    assert answer.status_code == 404
    assert agent("x" * 40).post(f"/api/agent/runs/{run['run_id']}/heartbeat", {}).status_code == 401
    assert CoordinationTarget.objects.get(environment_id="laptop").status == T.RUNNING


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"offset": -1, "text": "x"}, "offset"),
        ({"offset": "0", "text": "x"}, "offset"),
        ({"offset": 0, "text": "x" * (64 * 1024 + 1)}, "text"),
        ({"offset": 0, "text": 5}, "text"),
        ({"offset": 0, "text": "x", "extra": 1}, "extra"),
    ],
)
def test_bad_output_bodies_name_the_field_and_change_nothing(body, field):
    polling_environment()
    target = offered()
    run = claim()
    events = StageEvent.objects.count()
    answer = agent().post(f"/api/agent/runs/{run['run_id']}/output", body, format="json")
    assert answer.status_code == 400 and field in answer.json()
    target.refresh_from_db()
    assert target.output_bytes == 0 and StageEvent.objects.count() == events


def test_a_non_polling_environment_is_told_so():
    make_environment("server", agent_token=TOKEN)
    answer = poll(agent(), "server")
    assert answer.status_code == 409 and "ssh" in answer.json()["detail"]


def test_overdue_runs_end_with_their_reason(settings):
    settings.AGENT_HEARTBEAT_TIMEOUT_SECONDS = 60
    polling_environment("offline", token=new_token(), timeout=30)
    polling_environment("lost", token=new_token(), timeout=3000)
    polling_environment("slow", token=new_token(), timeout=30)
    waiting = offered("offline", "deploy-a")
    lost = offered("lost", "deploy-b")
    slow = offered("slow", "deploy-c")
    long_ago = timezone.now() - timedelta(seconds=61)
    CoordinationTarget.objects.filter(pk=waiting.pk).update(agent_offered_at=long_ago)
    now = timezone.now()
    running = {"status": T.RUNNING}
    CoordinationTarget.objects.filter(pk=lost.pk).update(
        **running, agent_run_id="x", agent_claimed_at=now, agent_seen_at=long_ago
    )
    CoordinationTarget.objects.filter(pk=slow.pk).update(
        **running, agent_run_id="y", agent_claimed_at=long_ago, agent_seen_at=now
    )
    assert agent_runs_expire() == 3
    reasons = dict(CoordinationTarget.objects.values_list("environment_id", "reason"))
    assert reasons == {"offline": "agent_offline", "lost": "agent_lost", "slow": "timeout"}
    assert set(CoordinationTarget.objects.values_list("status", flat=True)) == {T.FAILED}
    assert agent_runs_expire() == 0


def test_a_lease_reap_leaves_agent_runs_alone():
    from deployments.leases import lease_acquire, lease_reap
    from deployments.models import RunLease

    polling_environment()
    target = offered()
    claim()
    lease = lease_acquire(coordination=target.coordination, lead=True)
    RunLease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    lease.refresh_from_db()
    assert lease_reap(lease=lease)
    target.refresh_from_db()
    assert target.status == T.RUNNING
    assert Coordination.objects.get(pk=target.coordination_id).status == C.LOCAL_TRIGGERING


def test_a_run_whose_environment_is_deleted_ends_at_the_next_look():
    environment = polling_environment()
    target = offered()
    claim()
    environment.delete()
    assert agent_runs_expire() == 1
    target.refresh_from_db()
    assert (target.status, target.reason) == (T.FAILED, "environment_deleted")


def test_what_the_agent_says_of_itself_reaches_the_event_printable_only():
    polling_environment()
    target = offered()
    body = {"environment_id": "laptop", "hostname": "mac\x1b[31m\nfake line", "agent_version": "1.1"}
    assert agent().post("/api/agent/poll", body, format="json").json()["run"] is not None
    message = StageEvent.objects.filter(target=target, new_status=T.RUNNING).get().message
    assert "mac[31mfake line 1.1" in message
    assert "\x1b" not in message and "\n" not in message
