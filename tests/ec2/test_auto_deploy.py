"""AUTO_DEPLOY_ON_STARTUP: the platform's start triggers one deployment per DEPLOYMENT_VERSION,
however many web and worker processes start at once."""

import contextlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction

from deployments.models import AutoDeploy, Coordination, CoordinationStatus as C, TriggerSource
from deployments.services import coordination_start
from deployments.startup import auto_deploy, on_platform_start
from environments.models import SettingsBlock
from tests.factories import make_environment
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import ROOT, in_thread, process_environment, wait_until

DECISION = "auto-deploy: "


@pytest.mark.django_db
def test_the_first_start_of_a_version_triggers_it_and_the_next_does_nothing():
    make_environment("env_a")
    make_environment("env_b")
    make_environment("env_off", enabled=False)

    first = auto_deploy(version="v9", process="web")
    second = auto_deploy(version="v9", process="worker")

    assert second is None
    assert (first.version, first.triggered_by) == ("v9", TriggerSource.STARTUP)
    assert sorted(first.targets.values_list("environment_id", flat=True)) == ["env_a", "env_b"]
    claim = AutoDeploy.objects.get()
    assert (claim.version, claim.coordination) == ("v9", first)
    assert claim.claimed_by.startswith("web ")


@pytest.mark.django_db
def test_a_version_someone_already_deployed_is_left_alone():
    make_environment("env_a")
    coordination_start(triggered_by=TriggerSource.COMMAND, version="v9")

    assert auto_deploy(version="v9", process="web") is None
    assert Coordination.objects.count() == 1
    assert not AutoDeploy.objects.exists()


@pytest.mark.django_db
def test_without_enabled_environments_nothing_is_claimed_so_a_later_start_tries_again():
    assert auto_deploy(version="v9", process="web") is None
    assert not AutoDeploy.objects.exists()

    make_environment("env_a")

    assert auto_deploy(version="v9", process="web") is not None


@pytest.mark.django_db
def test_auto_deploy_tags_choose_the_enabled_tagged_environments_less_the_excluded(settings):
    make_environment("mac_a", tags=["mac"])
    make_environment("mac_flaky", tags=["mac", "flaky"])
    make_environment("linux_a", tags=["linux"])
    settings.AUTO_DEPLOY_TAGS, settings.AUTO_DEPLOY_EXCLUDE_TAGS = ["mac"], ["flaky"]

    coordination = auto_deploy(version="v9", process="web")

    assert list(coordination.targets.values_list("environment_id", flat=True)) == ["mac_a"]


@pytest.mark.django_db
def test_an_auto_deploy_tag_no_environment_has_deploys_nothing_and_says_so(settings, caplog):
    make_environment("mac_a", tags=["mac"])
    settings.AUTO_DEPLOY_TAGS = ["macc"]

    assert auto_deploy(version="v9", process="web") is None

    assert not AutoDeploy.objects.exists() and not Coordination.objects.exists()
    assert "version v9 not deployed: unknown tag(s): macc" in caplog.text


@pytest.mark.django_db
def test_nothing_happens_unless_auto_deploy_is_on(settings):
    make_environment("env_a")
    settings.AUTO_DEPLOY_ON_STARTUP = False
    settings.DEPLOYMENT_VERSION = "v9"

    on_platform_start("web")

    assert not Coordination.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_processes_racing_for_a_version_start_one_coordination():
    make_environment("env_a")
    barrier = threading.Barrier(8)
    results = []

    def start_process(index: int) -> None:
        barrier.wait()
        results.append(auto_deploy(version="v9", process=f"web-{index}"))

    threads = [in_thread(start_process, index=index) for index in range(8)]
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 8
    assert len([result for result in results if result is not None]) == 1
    assert Coordination.objects.count() == 1
    assert AutoDeploy.objects.count() == 1


@pytest.mark.django_db
def test_the_database_refuses_a_second_claim_for_a_version():
    AutoDeploy.objects.create(version="v9", claimed_by="web a:1")

    with pytest.raises(IntegrityError), transaction.atomic():
        AutoDeploy.objects.create(version="v9", claimed_by="worker b:2")


# --- Real processes ---------------------------------------------------------------------


class Web:
    """A gunicorn process (one worker) on the test database."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "powerautomation.wsgi"]
                + ["--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def decisions(*logs: str) -> list[str]:
    return [line for log in logs for line in log.splitlines() if DECISION in line]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_web_and_worker_processes_starting_together_deploy_a_version_exactly_once(
    sshd, make_ssh_environment, start_qcluster, tmp_path
):
    SettingsBlock.objects.create(name="default_settings", values={"retry_count": 0, "health_check_retries": 0})
    make_ssh_environment("linux_local_001", sshd.script("startup.sh", "true\n"))
    make_ssh_environment("mac_local_001", sshd.script("startup.sh", "true\n"))
    start = {"AUTO_DEPLOY_ON_STARTUP": "true", "DEPLOYMENT_VERSION": "v9", "Q_WORKERS": "2", "LOG_LEVEL": "INFO"}
    env = process_environment(**start)
    webs: list[Web] = []
    try:
        # Two web servers and a cluster of two workers: four processes race for v9.
        webs = [Web(env, tmp_path / f"web-{i}.log") for i in range(2)]
        cluster = start_qcluster(**start)
        for web in webs:
            wait_for_port(web.port, timeout=30)
        logs = lambda: [web.output() for web in webs] + [cluster.output()]  # noqa: E731
        wait_until(lambda: len(decisions(*logs())) >= 4, 60, "every process to decide")
        wait_until(lambda: Coordination.objects.filter(status=C.COMPLETED).exists(), 60, "the deployment to end")

        coordination = Coordination.objects.get()
        assert (coordination.version, coordination.triggered_by) == ("v9", TriggerSource.STARTUP)
        assert coordination.targets.count() == 2
        assert AutoDeploy.objects.get().coordination == coordination
        started = [line for line in decisions(*logs()) if "started deploy_" in line]
        assert len(started) == 1, decisions(*logs())

        # Restart everything: v9 has its coordination; nothing new.
        for web in webs:
            web.stop()
        cluster.stop()
        webs = [Web(env, tmp_path / "web-restarted.log")]
        cluster = start_qcluster(**start)
        wait_until(lambda: len(decisions(webs[0].output(), cluster.output())) >= 3, 60, "the restarted processes")

        assert all("already has a coordination" in line for line in decisions(webs[0].output(), cluster.output()))
        assert Coordination.objects.count() == 1
        assert AutoDeploy.objects.count() == 1
    finally:
        for web in webs:
            with contextlib.suppress(Exception):
                web.stop()
