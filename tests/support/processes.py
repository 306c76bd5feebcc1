"""Processes of the project started for real: `manage.py` commands and the environment they
need to share the test database, a django-q2 cluster, the gunicorn web process; stopping them,
and waiting for what they do."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]  # the project folder, where manage.py is

# Prints a setting, so a test sees whether start-up accepted the variables.
_SETTINGS_CHECK = (
    "import django; django.setup(); from django.conf import settings; print(settings.Q_CLUSTER['timeout'])"
)


def in_thread(function, **kwargs) -> threading.Thread:
    """Run `function(**kwargs)` in a started thread that closes its database connection
    when done (a connection left open keeps PostgreSQL from dropping the test database)."""

    def run():
        from django.db import connections

        try:
            function(**kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll `condition` until it returns something truthy (returned), or fail after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_database_url() -> str:
    """The URL of the database the tests run on (the test database, once created)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    return f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def process_environment(database_name: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a manage.py process that shares the test database (and the
    test run's Redis, when the scale-out suite set REDIS_URL). `database_name` names
    another SQLite file instead."""
    from django.conf import settings

    url = test_database_url()
    if database_name and url.startswith("sqlite:"):
        url = f"sqlite:///{database_name}"
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "powerautomation.settings",
            "DATABASE_URL": url,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "SSH_KNOWN_HOSTS": settings.SSH_KNOWN_HOSTS,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def manage(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_with(**variables) -> subprocess.CompletedProcess:
    """Start Django in a fresh process with these settings variables (and no DATABASE_URL or
    REDIS_URL from this one); it prints Q_CLUSTER's timeout when start-up accepts them."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "powerautomation.settings", "DJANGO_SECRET_KEY": "test-key"})
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-c", _SETTINGS_CHECK], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def stop_process(process: subprocess.Popen, *, timeout: float = 10, signum: int = signal.SIGTERM) -> None:
    """Send `signum` to a process still running, and SIGKILL it if it has not exited after
    `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to a process started with `start_new_session=True`, SIGKILL after 20 s, then
    SIGKILL to anything of its process group left behind."""
    stop_process(process, timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class QCluster:
    """A real `manage.py qcluster` process in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        stop_process_group(self.process)  # the cluster's main process stops its own workers on SIGTERM
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Web:
    """The web process as `make run` starts it (gunicorn), on a free loopback port."""

    def __init__(
        self, env: dict[str, str], log_path: Path, *, workers: int = 2, threads: int = 4, port: int | None = None
    ):
        self.port = port or free_port()  # a port of its own, or that of a web process stopped to restart it
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "powerautomation/gunicorn.conf.py"]
            + ["powerautomation.wsgi", "--bind", f"127.0.0.1:{self.port}"]
            + ["--workers", str(workers), "--threads", str(threads), "--access-logfile", "-"],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        stop_process_group(self.process)  # gunicorn's arbiter stops its workers on SIGTERM
        self.log.close()
