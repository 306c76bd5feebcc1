import os
import subprocess

import pytest
from knox.models import AuthToken

from tests.factories import make_user
from tests.support.client_venv import ClientVenv, make_client_venv
from tests.support.processes import Web, process_environment


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> ClientVenv:
    """The client installed in a virtual environment without Django."""
    return make_client_venv(tmp_path_factory.mktemp("client-venv"))


@pytest.fixture
def admin_token(transactional_db) -> str:
    _, key = AuthToken.objects.create(user=make_user("deploy-bot", "ADMIN"))
    return key


@pytest.fixture
def viewer_token(transactional_db) -> str:
    _, key = AuthToken.objects.create(user=make_user("watcher", "VIEWER"))
    return key


@pytest.fixture
def web(transactional_db, tmp_path):
    """The platform's web process (gunicorn); `web.restart()` stops it and starts it again
    on the same port."""
    env = process_environment()
    log_path = tmp_path / "gunicorn.log"
    holder = {"web": Web(env, log_path, workers=1, threads=8)}

    class Handle:
        url = holder["web"].url
        log = log_path

        @staticmethod
        def restart() -> None:
            port = holder["web"].port
            holder["web"].stop()
            holder["web"] = Web(env, log_path, workers=1, threads=8, port=port)

    yield Handle
    holder["web"].stop()


@pytest.fixture
def powerautomation(client_venv, tmp_path):
    """Run the `powerautomation` command in the client's environment (no Django, none of
    this process's variables) against `url` with `token`."""

    def run(url: str, token: str, *args: str, extra_env=None, timeout: float = 120, popen: bool = False):
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "POWERAUTOMATION_URL": url}
        env["POWERAUTOMATION_TOKEN"] = token
        env.update(extra_env or {})
        command = [str(client_venv.command), *args]
        if popen:
            return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)

    return run
