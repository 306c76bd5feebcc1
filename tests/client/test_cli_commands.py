"""The operator's commands against one live platform (gunicorn and a real qcluster,
started once for the module; a loopback sshd): `trigger-local --wait --output`, `output`,
`cancel`, `retry`, `approve`, `environments list|show|import|export`, and client/README.md's
own Python example. Each command must change the platform's state or print what it holds;
the CLI runs in this process (it imports no Django), the example in the client's venv."""

import io
import json
import re
import subprocess
import sys

import pytest
from knox.models import AuthToken

from deployments.models import Coordination, CoordinationStatus as C
from deployments.script_output import output_read
from environments.models import RemoteEnvironment, SettingsBlock
from tests.client.test_cli_e2e import stage_log
from tests.factories import make_user
from tests.support.client_venv import CLIENT
from tests.support.passes import sqlite_pass_only
from tests.support.processes import QCluster, Web, process_environment, wait_until

sys.path.insert(0, str(CLIENT / "src"))
from powerautomation_client import cli  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]


@pytest.fixture(scope="module")
def platform(django_db_setup, django_db_blocker, sshd, tmp_path_factory):
    """One web process and one worker for every test here; each test's rows are its own
    (the database is emptied after each)."""
    folder = tmp_path_factory.mktemp("platform")
    env = process_environment(SSH_KNOWN_HOSTS=str(sshd.known_hosts))
    web = Web(env, folder / "gunicorn.log", workers=1, threads=8)
    cluster = QCluster(env, folder / "qcluster.log")
    yield web, cluster
    cluster.stop()
    web.stop()


@pytest.fixture
def tokens(transactional_db, no_retry_delay) -> dict[str, str]:
    return {
        role: AuthToken.objects.create(user=make_user(f"{role.lower()}-bot", role))[1] for role in ("ADMIN", "VIEWER")
    }


class Shell:
    """`powerautomation ARGS` against the platform; every output kept, to look for the token."""

    def __init__(self, url: str, tokens: dict[str, str], monkeypatch):
        self.url, self.tokens, self.monkeypatch, self.seen = url, tokens, monkeypatch, []

    def __call__(self, *args: str, role: str = "ADMIN") -> tuple[int, str, str]:
        self.monkeypatch.setenv("POWERAUTOMATION_TOKEN", self.tokens[role])
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--url", self.url, *args], out=out, err=err)
        self.seen.append(out.getvalue() + err.getvalue())
        return code, out.getvalue(), err.getvalue()

    def json(self, *args: str, role: str = "ADMIN"):
        code, out, err = self(*args, "--json", role=role)
        assert code == 0, err
        return json.loads(out)

    def leaked(self) -> bool:
        return any(token in text for text in self.seen for token in self.tokens.values())


@pytest.fixture
def shell(platform, tokens, monkeypatch) -> Shell:
    monkeypatch.delenv("POWERAUTOMATION_CA_BUNDLE", raising=False)
    return Shell(platform[0].url, tokens, monkeypatch)


def test_trigger_local_output_follows_each_environments_lines_and_output_prints_them_whole(
    make_ssh_environment, sshd, shell
):
    make_ssh_environment("out_env", sshd.script("out.sh", "echo alpha; echo beta; printf gamma\n"))

    code, out, err = shell(
        "trigger-local", "--wait", "--output", "--environments", "out_env", "--coordination-id", "r1"
    )
    json_code, json_out, json_err = shell(
        "trigger-local", "--wait", "--output", "--json", "--environments", "out_env", "--coordination-id", "r2"
    )
    whole = shell("output", "r1", "out_env")
    as_json = shell.json("output", "r1", "out_env")

    assert code == 0, out + err
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("[out_env] ")] == [
        "[out_env] alpha",
        "[out_env] beta",
        "[out_env] gamma",
    ]
    assert [line for line in lines if not line.startswith("[out_env] ")] == stage_log("r1")
    # --json: stdout is the final record alone; the output lines go to stderr.
    assert json_code == 0, json_err
    record = json.loads(json_out)
    assert (record["coordination_id"], record["status"]) == ("r2", "completed")
    assert "[out_env] gamma" in json_err.splitlines()
    # `output`: the whole text as the platform stored it; --json its fields, the text whole.
    stored = output_read(Coordination.objects.get(coordination_id="r1").targets.get()).text
    assert whole == (0, stored, "") and stored.replace("\r\n", "\n") == "alpha\nbeta\ngamma"
    assert {key: as_json[key] for key in ("environment_id", "offset", "complete", "text")} == {
        "environment_id": "out_env",
        "offset": 0,
        "complete": True,
        "text": stored,
    }
    assert shell("output", "r1", "ghost_env")[0] == 2
    # --output without --wait is bad input: nothing starts.
    refused = shell("trigger-local", "--output", "--environments", "out_env", "--coordination-id", "r3")
    assert refused == (2, "", "powerautomation: --output: only with --wait (it follows the run)\n")
    assert not Coordination.objects.filter(coordination_id="r3").exists()
    assert not shell.leaked()


def test_cancel_retry_and_approve_change_the_runs_on_the_platform(make_ssh_environment, sshd, shell):
    make_ssh_environment("slow_env", sshd.script("slow30.sh", "sleep 30\n"))
    make_ssh_environment("ok_env", sshd.script("ok.sh", "true\n"))
    make_ssh_environment("ok2_env", sshd.script("ok2.sh", "true\n"))
    make_ssh_environment("bad_env", sshd.script("bad.sh", "exit 3\n"))

    # cancel: a running script is hung up, the coordination ends cancelled.
    assert shell("trigger-local", "--environments", "slow_env", "--coordination-id", "slow")[0] == 0
    wait_until(lambda: Coordination.objects.filter(coordination_id="slow", targets__status="running").exists(), 60, "")
    assert shell("cancel", "slow", role="VIEWER")[0] == 4
    assert Coordination.objects.get(coordination_id="slow").status != C.CANCELLED
    assert shell("cancel", "slow") == (0, "slow: cancelled\n", "")
    wait_until(lambda: not Coordination.objects.filter(targets__status="running").exists(), 30, "the hang-up")
    assert Coordination.objects.get(coordination_id="slow").status == C.CANCELLED
    again = shell("cancel", "slow")
    assert again[0] == 1 and again[2].startswith("powerautomation: cancel: ") and "cancelled" in again[2]
    assert shell("cancel", "ghost")[:2] == (2, "")

    # retry: a new coordination over what failed, its retry_of the first.
    assert shell("trigger-local", "--wait", "--environments", "ok_env,bad_env", "--coordination-id", "bad")[0] == 1
    retry = shell.json("retry", "bad")
    assert (retry["retry_of"], retry["environments"]) == ("bad", ["bad_env"])
    first_retry = Coordination.objects.get(coordination_id=retry["coordination_id"])
    assert first_retry.retry_of.coordination_id == "bad"
    wait_until(lambda: Coordination.objects.get(pk=first_retry.pk).status == C.FAILED, 60, "the retry")
    code, out, err = shell("retry", "bad")
    assert code == 0 and re.fullmatch(r"🔁 retry (\S+) of bad: bad_env\n", out), err
    assert Coordination.objects.filter(retry_of__coordination_id="bad").count() == 2

    # approve: a canary wave, then the rest once an ADMIN approves.
    canary = ["--environments", "ok_env,ok2_env", "--batch-size", "1", "--pause-after-first", "approval"]
    assert shell("trigger-local", *canary, "--coordination-id", "canary")[0] == 0
    wait_until(lambda: Coordination.objects.get(coordination_id="canary").status == C.AWAITING_APPROVAL, 60, "wave 1")
    assert shell("approve", "canary", role="VIEWER")[0] == 4
    code, out, err = shell("approve", "canary", "--json")
    assert code == 0, err
    assert json.loads(out)["approved_by"] == "admin-bot"
    wait_until(lambda: Coordination.objects.get(coordination_id="canary").status == C.COMPLETED, 60, "wave 2")
    late = shell("approve", "canary")
    assert late[0] == 1 and "not awaiting approval" in late[2]
    assert not shell.leaked()


def test_environments_import_export_list_and_show(sshd, shell, tmp_path):
    entry = {
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.user,
        "ssh_key_path": str(sshd.client_key),
        "password": "s3cret-pass",
    }
    config = tmp_path / "remote_environments.json"
    config.write_text(json.dumps({"environments": [{"environment_id": i, **entry} for i in ("e_a", "e_b")]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"environments": [{"environment_id": "e_c", **entry, "port": 70000}]}))

    assert shell("environments", "import", str(config), role="VIEWER")[0] == 4
    assert shell("environments", "import", str(config), "--dry-run") == (0, "would be created: e_a, e_b\n", "")
    assert not RemoteEnvironment.objects.exists()
    assert shell("environments", "import", str(config)) == (0, "created: e_a, e_b\n", "")
    code, out, err = shell("environments", "import", str(bad))
    assert (code, err) == (2, "powerautomation: environments[0] (e_c).port: Enter a whole number from 1 to 65535.\n")
    unreadable = shell("environments", "import", str(tmp_path / "missing.json"))
    assert unreadable[0] == 2 and unreadable[2].startswith("powerautomation: FILE: cannot read")
    assert sorted(RemoteEnvironment.objects.values_list("environment_id", flat=True)) == ["e_a", "e_b"]

    code, out, err = shell("environments", "list", role="VIEWER")
    assert code == 0 and [line.split()[:3] for line in out.splitlines()] == [
        ["e_a", "ssh", "enabled"],
        ["e_b", "ssh", "enabled"],
    ]
    assert [env["environment_id"] for env in shell.json("environments", "list")] == ["e_a", "e_b"]
    shown = shell.json("environments", "show", "e_b", role="VIEWER")
    assert (shown["environment_id"], shown["port"], shown["password_set"]) == ("e_b", sshd.port, True)
    assert shell("environments", "show", "ghost")[0] == 2

    code, exported, err = shell("environments", "export")
    assert code == 0, err
    document = json.loads(exported)
    assert [env["environment_id"] for env in document["environments"]] == ["e_a", "e_b"]
    assert "s3cret-pass" not in exported
    # The export imports back unchanged; --prune deletes what a file leaves out.
    config.write_text(exported)
    assert shell("environments", "import", str(config)) == (0, "unchanged: e_a, e_b\n", "")
    document["environments"] = document["environments"][:1]
    config.write_text(json.dumps(document))
    assert shell.json("environments", "import", str(config), "--prune")["deleted"] == ["e_b"]
    assert list(RemoteEnvironment.objects.values_list("environment_id", flat=True)) == ["e_a"]
    assert not shell.leaked()


def test_the_client_readmes_python_example_runs(sshd, platform, tokens, client_venv, tmp_path):
    """client/README.md's example, with its placeholders (address, token, machine) filled in."""
    (example,) = re.findall(r"```python\n(.*?)```", (CLIENT / "README.md").read_text(), re.S)
    script = sshd.script("init_aicore.sh", "echo initialised\n")
    for old, new in (
        ('"https://coordinator.example.com"', repr(platform[0].url)),
        ("token=TOKEN", f"token={tokens['ADMIN']!r}"),
        ('"192.168.1.100"', repr(sshd.host)),
        ("port=22", f"port={sshd.port}"),
        ('"alexchuang"', repr(sshd.user)),
        ('"/path/to/ssh/key"', repr(str(sshd.client_key))),
        ('"./init_aicore.sh"', repr(str(script))),
    ):
        assert old in example
        example = example.replace(old, new)
    (tmp_path / "example.py").write_text(example)
    SettingsBlock.objects.update_or_create(name="default_settings", defaults={"values": {"retry_count": 0}})

    result = subprocess.run(
        [str(client_venv.python), str(tmp_path / "example.py")],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    status, duration, errors = result.stdout.split(" ", 2)
    assert (status, errors) == ("completed", "[]\n") and float(duration) >= 0
    assert Coordination.objects.get(coordination_id="deploy_001").status == C.COMPLETED
    assert tokens["ADMIN"] not in result.stdout + result.stderr
