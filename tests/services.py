"""Real services for tests, started on loopback: an OpenSSH server, an HTTP server,
and a django-q2 cluster process. See ../shared/TESTING-REAL-SERVICES.md."""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SSH_TEST_USER = "pa-ssh-test"


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _ensure_test_user() -> str:
    """Log in as a dedicated user whose shell is /bin/sh (root's bashrc makes every login
    slow); when not root, sshd only lets the user running it in."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(SSH_TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", SSH_TEST_USER], check=True)
    # useradd leaves the account locked, and sshd refuses key logins to a locked account.
    subprocess.run(["usermod", "-p", "*", SSH_TEST_USER], check=True)
    return SSH_TEST_USER


@dataclass
class SSHServer:
    """A throwaway sshd on 127.0.0.1 and everything needed to log in to it."""

    port: int
    user: str
    client_key: Path
    host_public_key: str
    known_hosts: Path
    scripts: Path  # readable and writable by the login user
    process: subprocess.Popen | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    def script(self, name: str, body: str) -> Path:
        """Write an executable shell script the login user can run."""
        path = self.scripts / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path


def start_sshd(base: Path) -> SSHServer:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        raise RuntimeError("sshd is not installed (Debian package openssh-server; .ci/run installs it)")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    host_public_key = keygen(base / "host_key")
    client_public_key = keygen(base / "client_key")
    (base / "authorized_keys").write_text(client_public_key + "\n")
    (base / "authorized_keys").chmod(0o644)
    scripts = Path(tempfile.mkdtemp(prefix="pa-ssh-scripts-"))
    scripts.chmod(0o777)
    user = _ensure_test_user()
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {base / 'host_key'}",
                f"AuthorizedKeysFile {base / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                f"PidFile {base / 'sshd.pid'}",
                "LogLevel ERROR",
                "MaxStartups 1000:30:1000",
                "MaxSessions 1000",
                f"AllowUsers {user}",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=open(base / "sshd.log", "wb"))
    wait_for_port(port)
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
    return SSHServer(
        port=port,
        user=user,
        client_key=base / "client_key",
        host_public_key=host_public_key,
        known_hosts=known_hosts,
        scripts=scripts,
        process=process,
    )


def stop_sshd(server: SSHServer) -> None:
    if server.process and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(timeout=10)
    shutil.rmtree(server.scripts, ignore_errors=True)


@dataclass
class Answer:
    status: int = 200
    body: str | bytes = ""
    delay: float = 0.0  # seconds before answering
    headers: dict = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        import json

        return json.loads(self.body)


class HTTPServer:
    """A loopback HTTP server with scripted answers, recording every request.

    `answer(path, *answers)` queues answers for a path; the last one repeats. A bare int
    is a status code. Unknown paths get 404."""

    def __init__(self):
        self.routes: dict[str, list[Answer]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = owner._next(self.command, self.path, dict(self.headers), body)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = answer.body.encode() if isinstance(answer.body, str) else answer.body
                self.send_response(answer.status)
                for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle  # noqa: N815 (http.server's names)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, path: str, *answers) -> None:
        with self.lock:
            self.routes[path] = [a if isinstance(a, Answer) else Answer(status=a) for a in answers]

    def _next(self, method: str, path: str, headers: dict, body: bytes) -> Answer:
        with self.lock:
            self.requests.append(Request(method, path, headers, body))
            queue = self.routes.get(path)
            if not queue:
                return Answer(status=404, body='{"detail": "not found"}')
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def silent_server() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


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


def manage(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
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

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 2, threads: int = 4):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "powerautomation.wsgi", "--bind", f"127.0.0.1:{self.port}"]
            + ["--workers", str(workers), "--threads", str(threads)],
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


class Agent:
    """The local agent (agent/powerautomation_agent.py) as a real process on loopback."""

    def __init__(self, folder: Path, script_body: str, *, token: str = "", webhook_secret: str = ""):
        folder.mkdir(parents=True, exist_ok=True)
        self.script = folder / "init_aicore.sh"
        self.script.write_text("#!/bin/sh\n" + script_body)
        self.script.chmod(0o755)
        self.port = free_port()
        args = [sys.executable, str(ROOT / "agent" / "powerautomation_agent.py"), "--port", str(self.port)]
        args += ["--bind", "127.0.0.1", "--script", str(self.script)]
        token_file = folder / "token.txt"
        token_file.write_text(token or "unused-token")
        args += ["--token-file", str(token_file)]
        if webhook_secret:
            (folder / "secret.txt").write_text(webhook_secret)
            args += ["--webhook-secret-file", str(folder / "secret.txt")]
        self.log_path = folder / "agent.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# --- PostgreSQL and Redis, as throwaway servers (the scale-out suite and the benchmark) ----

POSTGRES_BIN = Path("/usr/lib/postgresql")


def postgres_bin() -> Path | None:
    versions = sorted(POSTGRES_BIN.glob("*/bin/pg_ctl"), key=lambda path: int(path.parent.parent.name))
    return versions[-1].parent if versions else None


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port, in a temp dir. As root it runs
    as the `postgres` user (it refuses to run as root)."""

    def __init__(self, base: Path, *, max_connections: int = 300):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        base.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(base, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c max_connections={max_connections}"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(base / "log"), "-w", "start")
        self.started = True

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")

    def url(self, database: str = "powerautomation") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


class Redis:
    """A throwaway Redis server on a free loopback port, persisting nothing."""

    def __init__(self, base: Path):
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)
