"""The product as it runs for real, in throwaway form: a database (a SQLite file, or the
tests' throwaway PostgreSQL and Redis), `manage.py` commands, a `qcluster` and a gunicorn
web process, all on 127.0.0.1 and all stopped by the benchmark. Also the memory of a
process tree, sampled from /proc."""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.databases import postgres_bin
from tests.support.processes import ROOT, QCluster, Web, manage

RSS_SAMPLE_SECONDS = 0.1
TREE_REFRESH_SECONDS = 1.0
# The benchmark's request loops must not hit the product's default limit (600/minute);
# every request still goes through the throttle and its cache.
BENCH_THROTTLE_RATE = "1000000/minute"


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and shows its output."""


def check(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        raise BenchError(f"{what} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


@dataclass
class Product:
    """One installation of the product: its process environment and what it started."""

    env: dict[str, str]
    work: Path
    label: str
    processes: list = field(default_factory=list)

    def manage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return check(manage(list(args), self.env, timeout=timeout), f"manage.py {args[0]}")

    def python(self, module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """A bench module run with the product's settings (it sets Django up itself)."""
        command = [sys.executable, "-m", module, *args]
        result = subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        return check(result, f"python -m {module}")

    def start_qcluster(self) -> QCluster:
        cluster = QCluster(self.env, self.work / f"qcluster-{len(self.processes)}.log")
        self.processes.append(cluster)
        return cluster

    def start_web(self) -> str:
        """gunicorn as `make run` starts it (2 workers, 4 threads each); returns its URL."""
        web = Web(self.env, self.work / f"gunicorn-{len(self.processes)}.log")
        self.processes.append(web)
        return web.url

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()


def product_environment(*, database_url: str, known_hosts: Path, redis_url: str = "") -> dict[str, str]:
    """The product's settings as environment variables, none inherited from the caller's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "Q_", "SSH_", "API_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "powerautomation.settings",
            "DATABASE_URL": database_url,
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "SSH_KNOWN_HOSTS": str(known_hosts),
            "API_THROTTLE_RATE": BENCH_THROTTLE_RATE,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def sqlite_product(work: Path, *, known_hosts: Path, template: Path | None = None) -> Product:
    """A product on a fresh SQLite file (the embedded default: ORM broker, database cache).
    `template`, a migrated database file, is copied instead of migrating again."""
    work.mkdir(parents=True, exist_ok=True)
    database = work / "db.sqlite3"
    env = product_environment(database_url=f"sqlite:///{database}", known_hosts=known_hosts)
    product = Product(env, work, "SQLite")
    if template is not None:
        shutil.copyfile(template, database)
    else:
        product.manage("migrate", "--noinput", timeout=600)
    return product


def missing_postgres_redis() -> str:
    """Why PostgreSQL + Redis cannot be measured here, or "" when they can."""
    problems = []
    if postgres_bin() is None:
        problems.append("PostgreSQL server binaries (Debian package postgresql) are not installed")
    if shutil.which("redis-server") is None:
        problems.append("redis-server (Debian package redis-server) is not installed")
    return "; ".join(problems)


# --- Memory of a process tree --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    return found


def process_tree(root: int) -> list[int]:
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(_children(pid))
    return tree


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of one process in KiB. VmRSS counts every page a forked process shares
    with its parent in both; Pss divides a shared page between the processes sharing it."""
    rss = pss = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        rss = next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as handle:
        pss = next((int(line.split()[1]) for line in handle if line.startswith("Pss:")), 0)
    return rss, pss


class PeakMemory:
    """Samples the summed VmRSS and Pss of a process and all its descendants every 0.1 s in
    a thread (the tree is re-read every second); keeps the largest sums seen."""

    def __init__(self, root: int):
        self.root = root
        self.rss_kib = self.pss_kib = self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        pids: list[int] = []
        refreshed = 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed >= TREE_REFRESH_SECONDS:
                pids = process_tree(self.root)
                self.processes = max(self.processes, len(pids))
                refreshed = time.monotonic()
            memory = [memory_kib(pid) for pid in pids]
            self.rss_kib = max(self.rss_kib, sum(rss for rss, _ in memory))
            self.pss_kib = max(self.pss_kib, sum(pss for _, pss in memory))
            self._stop.wait(RSS_SAMPLE_SECONDS)


def tree_memory(root: int) -> list[tuple[int, str, int, int]]:
    """(pid, command, VmRSS KiB, Pss KiB) of every process in the tree, now."""
    rows = []
    for pid in process_tree(root):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            rows.append((pid, command, *memory_kib(pid)))
    return rows
