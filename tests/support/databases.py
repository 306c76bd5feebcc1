"""Throwaway PostgreSQL and Redis servers on free loopback ports, for the scale-out suite
(tests/scaleout.py) and the benchmark. Both persist nothing and are removed by `stop()`."""

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.ports import free_port, wait_for_port

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
