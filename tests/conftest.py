import os
import tempfile
from pathlib import Path

import pytest

from deployments.models import Coordination, TriggerSource
from deployments.services import coordination_start
from deployments.tasks import run_coordination
from environments.models import RemoteEnvironment, SettingsBlock
from tests.support.http import Answer, HTTPServer, HugeBodyServer
from tests.support.processes import ROOT, QCluster, Web, process_environment
from tests.support.sshd import start_sshd, stop_sshd


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A file-based SQLite test database, so a separately started qcluster or manage.py
    process sees what the tests commit."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # One file per pytest process: concurrent runs must not share (and recreate) it.
        name = Path(tempfile.gettempdir()) / f"pa-test-{os.getpid()}.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(name)


@pytest.fixture(scope="session", autouse=True)
def _collected_static():
    """collectstatic once, as `make run` does: the admin's pages (in-process or served by
    gunicorn) name their assets through the manifest it writes."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, check=True
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(Path(tempfile.mkdtemp(prefix="pa-sshd-")))
    yield server
    stop_sshd(server)


@pytest.fixture(autouse=True)
def _known_hosts(request, settings):
    """Verify host keys against the test sshd's known_hosts file, never the user's."""
    if "sshd" in request.fixturenames:
        server = request.getfixturevalue("sshd")
        settings.SSH_KNOWN_HOSTS = str(server.known_hosts)
    else:
        settings.SSH_KNOWN_HOSTS = str(ROOT / "tests" / "no-such-known-hosts")


@pytest.fixture
def http_server():
    server = HTTPServer()
    yield server
    server.close()


@pytest.fixture
def huge_body_server():
    """Start loopback servers answering with a huge or endless body (HugeBodyServer)."""
    servers: list[HugeBodyServer] = []

    def start(**kwargs) -> HugeBodyServer:
        servers.append(server := HugeBodyServer(**kwargs))
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def make_ssh_environment(sshd):
    """Register an SSH environment that logs in to the test sshd and runs `script`."""
    from environments.models import RemoteEnvironment

    def make(environment_id: str, script: Path | str, **fields) -> RemoteEnvironment:
        values = {
            "environment_type": "linux_local",
            "connection_method": "ssh",
            "host": sshd.host,
            "port": sshd.port,
            "username": sshd.user,
            "ssh_key_path": str(sshd.client_key),
            "init_script_path": str(script),
            "timeout": 30,
        }
        values.update(fields)
        environment = RemoteEnvironment(environment_id=environment_id, **values)
        environment.full_clean()
        environment.save()
        return environment

    return make


@pytest.fixture
def no_retry_delay():
    """Config blocks that make connection retries immediate."""
    from environments.models import SettingsBlock

    SettingsBlock.objects.update_or_create(
        name="default_settings", defaults={"values": {"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}}
    )


@pytest.fixture
def start_qcluster(transactional_db, tmp_path, settings):
    """Start a real django-q2 cluster process on the test database; extra environment
    variables configure it (e.g. PLATFORM_BASE_URL)."""
    clusters = []

    def start(**extra_env: str) -> QCluster:
        env = process_environment(**extra_env)
        cluster = QCluster(env, tmp_path / f"qcluster-{len(clusters)}.log")
        cluster.env = env
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()
    if os.environ.get("REDIS_URL"):
        # Tasks a test left in the Redis queue must not reach the next test's cluster.
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


@pytest.fixture
def qcluster(start_qcluster):
    """A real django-q2 cluster process working on the test database."""
    return start_qcluster()


@pytest.fixture
def web_server(transactional_db, settings, tmp_path):
    """The platform's web process (gunicorn, as `make run` starts it) on the test database."""
    web = Web(process_environment(), tmp_path / "gunicorn.log", workers=1, threads=8)
    try:
        yield web.url
    finally:
        web.stop()


# What an agent answered when it refused a trigger: a body that could hold anything.
AGENT_BODY = "upstream: connection to db failed for user=deploy password=hunter2-c4f1"


@pytest.fixture
def refusing_agent(transactional_db, http_server) -> RemoteEnvironment:
    """An http_api environment ("docker_agent") whose agent on loopback answers every
    trigger HTTP 500 with AGENT_BODY, and no retries."""
    SettingsBlock.objects.update_or_create(name="default_settings", defaults={"values": {"retry_count": 0}})
    http_server.answer("/api/deploy/init", Answer(500, AGENT_BODY))
    return RemoteEnvironment.objects.create(
        environment_id="docker_agent",
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=http_server.port,
        api_token="agent-token-0e2d",  # noqa: S106
        timeout=20,
    )


@pytest.fixture
def refused_by_agent(refusing_agent):
    """A coordination run to its end whose only environment's agent answered HTTP 500
    with AGENT_BODY (no retries): the rows a real run leaves."""
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_refused")
    run_coordination(coordination_pk=coordination.pk)
    return Coordination.objects.get(pk=coordination.pk)
