"""End to end as a script drives it: an API token, HTTP requests to a live server, a real
`qcluster` process doing the work, a real sshd on loopback."""

import os
import time
from pathlib import Path

import pytest
import requests

from deployments.models import Coordination
from environments.models import SettingsBlock
from tests.factories import make_user, token_client
from tests.support.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(live_server):
    """A requests session with an ADMIN token, as a deploy script has."""
    key = token_client(make_user("deploy-script", "ADMIN")).key
    session = requests.Session()
    session.headers["Authorization"] = f"Token {key}"
    session.base = f"{live_server.url}/api/deployment"
    yield session
    session.close()


def follow(api, coordination_id: str, *, timeout: float = 60) -> tuple[str, list[dict]]:
    """Poll the events endpoint from cursor to cursor until the coordination has ended."""
    events, after = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = api.get(f"{api.base}/coordinations/{coordination_id}/events/", params={"after": after}, timeout=10)
        assert page.status_code == 200, page.text
        body = page.json()
        events.extend(body["events"])
        after = body["next_after"]
        if body["finished"] and not body["has_more"]:
            return body["coordination_status"], events
        if not body["has_more"]:
            time.sleep(0.2)
    raise AssertionError(f"{coordination_id} still running after {timeout} s: {events}")


@pytest.fixture
def marks(sshd, tmp_path):
    """A directory of this test's own in the sshd's scripts folder (other tests use it too),
    writable by the login user: for the scripts and what they leave behind."""
    directory = Path(sshd.scripts) / f"api-{tmp_path.name}"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


def script(sshd, marks: Path, name: str, body: str) -> Path:
    return sshd.script(f"{marks.name}/{name}", body)


@pytest.fixture
def quick_retries(transactional_db):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )


def test_a_token_triggers_a_deployment_and_follows_it_to_completed(
    api, sshd, marks, make_ssh_environment, qcluster, quick_retries
):
    init = script(sshd, marks, "init_aicore.sh", f'echo "$ENVIRONMENT_ID $DEPLOYMENT_VERSION" >> "{marks}/seen"\n')
    make_ssh_environment("mac_local_001", init)
    make_ssh_environment("linux_local_001", init)

    response = api.post(
        f"{api.base}/trigger-local",
        json={"version": "v4.0.0", "ec2": {"instance_id": "i-0123456789abcdef0", "public_ip": "127.0.0.9"}},
        headers={"Idempotency-Key": "pipeline-run-1"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    coordination_id = response.json()["coordination_id"]

    status, events = follow(api, coordination_id)

    assert status == "completed", events
    ended = {(e["environment_id"], e["new_status"]) for e in events if e["new_status"] == "succeeded"}
    assert ended == {("mac_local_001", "succeeded"), ("linux_local_001", "succeeded")}
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})  # each event once, in order
    assert sorted((marks / "seen").read_text().splitlines()) == [
        "linux_local_001 v4.0.0",
        "mac_local_001 v4.0.0",
    ]
    record = api.get(response.json()["status_url"], timeout=10).json()
    assert (record["status"], record["triggered_by"], record["triggered_by_user"]) == (
        "completed",
        "api",
        "deploy-script",
    )
    assert record["progress"]["succeeded"] == 2
    history = api.get(f"{api.base}/history", params={"limit": 1}, timeout=10).json()
    assert history["results"][0]["coordination_id"] == coordination_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_hangs_up_running_environments_and_never_starts_pending_ones(
    api, sshd, marks, make_ssh_environment, qcluster, quick_retries
):
    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": 1})
    slow = script(sshd, marks, "slow.sh", f'echo $$ > "{marks}/slow.pid"\nexec sleep 60\n')
    never = script(sshd, marks, "never.sh", f'touch "{marks}/never-started"\n')
    make_ssh_environment("a_slow_env", slow)
    make_ssh_environment("b_waiting_env", never)

    coordination_id = api.post(f"{api.base}/trigger-local", json={}, timeout=10).json()["coordination_id"]
    pid_file = marks / "slow.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the slow script to start")
    pid = int(pid_file.read_text())
    assert _alive(pid)

    response = api.post(f"{api.base}/coordinations/{coordination_id}/cancel/", timeout=10)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    status, events = follow(api, coordination_id)
    assert status == "cancelled"
    # `finished` waited for the hung-up environment's own end.
    assert ("a_slow_env", "running", "cancelled") in [
        (e["environment_id"], e["old_status"], e["new_status"]) for e in events
    ]
    targets = {t.environment_id: t for t in Coordination.objects.get(coordination_id=coordination_id).targets.all()}
    assert (targets["a_slow_env"].status, targets["a_slow_env"].reason) == ("cancelled", "cancelled")
    assert (targets["b_waiting_env"].status, targets["b_waiting_env"].attempts) == ("cancelled", 0)
    wait_until(lambda: not _alive(pid), 15, "the remote script to be hung up")
    assert not (marks / "never-started").exists()
    again = api.post(f"{api.base}/coordinations/{coordination_id}/cancel/", timeout=10)
    assert (again.status_code, again.json()["status"]) == (409, "cancelled")


# --- Rollouts: the approval gate and concurrency: reject, over the API ---------------------


def record_of(api, coordination_id: str) -> dict:
    response = api.get(f"{api.base}/coordinations/{coordination_id}/", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_canary_waits_for_an_approval_over_the_api_then_the_rest_run(
    api, sshd, marks, make_ssh_environment, qcluster, quick_retries
):
    init = script(sshd, marks, "init_aicore.sh", f'echo "$ENVIRONMENT_ID" >> "{marks}/seen"\n')
    for name in ("env_a", "env_b", "env_c"):
        make_ssh_environment(name, init)
    body = {"rollout": {"batch_size": [1, "100%"], "pause_after_first_batch": "approval"}}

    response = api.post(f"{api.base}/trigger-local", json=body, timeout=10)

    assert response.status_code == 202, response.text
    coordination_id = response.json()["coordination_id"]
    wait_until(lambda: record_of(api, coordination_id)["status"] == "awaiting_approval", 60, "the approval gate")
    parked = record_of(api, coordination_id)
    assert (marks / "seen").read_text().splitlines() == ["env_a"]  # the canary alone
    assert (parked["wave"], parked["rollout"]["waves"], parked["approved_by"]) == (1, [1, 2], None)
    assert [(env["environment_id"], env["wave"], env["status"]) for env in parked["environments"]] == [
        ("env_a", 1, "succeeded"),
        ("env_b", 2, "pending"),
        ("env_c", 2, "pending"),
    ]

    approved = api.post(f"{api.base}/coordinations/{coordination_id}/approve/", timeout=10)

    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_by"] == "deploy-script"
    assert approved.json()["status"] != "awaiting_approval"
    status, events = follow(api, coordination_id)
    assert status == "completed", events
    assert sorted((marks / "seen").read_text().splitlines()) == ["env_a", "env_b", "env_c"]
    moves = [(e["old_status"], e["new_status"], e["data"]) for e in events if e["environment_id"] == ""]
    assert ("awaiting_approval", "local_deploying", {"approved_by": "deploy-script"}) in moves
    final = record_of(api, coordination_id)
    assert (final["approved_by"], final["wave"]) == ("deploy-script", 2)
    assert final["approved_at"] is not None
    again = api.post(f"{api.base}/coordinations/{coordination_id}/approve/", timeout=10)
    assert (again.status_code, again.json()["status"]) == (409, "completed")


def test_reject_refuses_a_second_coordination_while_the_first_runs_on_the_machine(
    api, sshd, marks, make_ssh_environment, qcluster, quick_retries
):
    # The first run on the machine hangs until cancelled; later runs end at once.
    init = script(
        sshd,
        marks,
        "init_aicore.sh",
        f'[ -e "{marks}/ran" ] || {{ touch "{marks}/ran"; echo $$ > "{marks}/slow.pid"; exec sleep 60; }}\n'
        f'echo "$COORDINATION_ID" >> "{marks}/seen"\n',
    )
    make_ssh_environment("shared_env", init)
    make_ssh_environment("free_env", init)
    first = api.post(f"{api.base}/trigger-local", json={"environments": ["shared_env"]}, timeout=10).json()
    pid_file = marks / "slow.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the first run to start")

    refused = api.post(
        f"{api.base}/trigger-local",
        json={"environments": ["free_env", "shared_env"], "rollout": {"concurrency": "reject"}},
        headers={"Idempotency-Key": "second-run"},
        timeout=10,
    )

    assert refused.status_code == 409, refused.text
    assert refused.json() == {
        "detail": f"environment(s) busy in another running coordination: shared_env (in {first['coordination_id']})",
        "busy": [{"environment_id": "shared_env", "coordination_id": first["coordination_id"]}],
    }
    assert list(Coordination.objects.values_list("coordination_id", flat=True)) == [first["coordination_id"]]
    assert api.post(f"{api.base}/coordinations/{first['coordination_id']}/cancel/", timeout=10).status_code == 200
    assert follow(api, first["coordination_id"])[0] == "cancelled"
    # The machine is free again: the same request now starts and runs.
    again = api.post(
        f"{api.base}/trigger-local",
        json={"environments": ["free_env", "shared_env"], "rollout": {"concurrency": "reject"}},
        headers={"Idempotency-Key": "second-run"},
        timeout=10,
    )
    assert again.status_code == 202, again.text
    assert follow(api, again.json()["coordination_id"])[0] == "completed"
    assert (marks / "seen").read_text().splitlines() == [again.json()["coordination_id"]] * 2
