"""Figures 1 and 4: the product's fan-out end to end against the raw-SSH baseline, and the
qcluster tree's peak memory while it runs. Where the product's time went is read from the
coordination's own rows (bench.timeline)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.fleet import Fleet, raw_fanout, write_config
from bench.stack import BenchError, PeakMemory, Product, tree_memory
from tests.support.processes import ROOT, stop_process

CLUSTER_START_TIMEOUT = 60
TRIGGER_TIMEOUT = 300
SETTLE_SECONDS = 1.0  # for sshd to reap the sessions of the run before


@dataclass
class Round:
    raw: float
    product: float
    busy: float  # cores busy in the second before the round: anything else on the machine
    rss_mib: float  # peak of the summed VmRSS of the qcluster tree
    pss_mib: float
    phases: list[tuple[str, float | None]]
    ssh: float  # claimed by a worker → last target ended: the part raw paramiko also does

    @property
    def ratio(self) -> float:
        return self.product / self.raw


@dataclass
class Fanout:
    """Every round of one fan-out benchmark. The figures are each measurement's best round
    (the one least disturbed by anything else on the machine)."""

    label: str
    count: int
    rounds: list[Round] = field(default_factory=list)
    idle: list[tuple[int, str, int, int]] = field(default_factory=list)  # the qcluster tree before the runs

    @property
    def raw(self) -> float:
        return min(r.raw for r in self.rounds)

    @property
    def product(self) -> float:
        return min(r.product for r in self.rounds)

    @property
    def ratio(self) -> float:
        return self.product / self.raw

    @property
    def best(self) -> Round:
        return min(self.rounds, key=lambda r: r.product)

    @property
    def rss_mib(self) -> float:
        return max(r.rss_mib for r in self.rounds)

    @property
    def pss_mib(self) -> float:
        return max(r.pss_mib for r in self.rounds)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:8]]
    return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy


def busy_cores(seconds: float) -> float:
    """Cores' worth of CPU the machine used over the next `seconds`. Between two runs only
    the idle qcluster and gunicorn are ours, so this is what something else is using. (The
    load average cannot tell: a fan-out's own 200 handshakes push it to 10 or more.)"""
    busy, total = _cpu_times()
    time.sleep(seconds)
    busy2, total2 = _cpu_times()
    return (busy2 - busy) / max(1, total2 - total) * (os.cpu_count() or 1)


def wait_until_cluster_runs(cluster) -> None:
    """Until the cluster says it is running: a benchmark of a deploy, not of start-up."""
    deadline = time.monotonic() + CLUSTER_START_TIMEOUT
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            raise BenchError(f"qcluster exited {cluster.process.returncode}:\n{cluster.output()[-3000:]}")
        if "running." in cluster.output():
            return
        time.sleep(0.1)
    raise BenchError(f"qcluster not running after {CLUSTER_START_TIMEOUT} s:\n{cluster.output()[-3000:]}")


def fanout(product: Product, fleet: Fleet, *, count: int, rounds: int, log, profile_dir: Path | None = None) -> Fanout:
    """1. Register `count` environments (import_environments) and start a qcluster.
    2. Each round: the raw baseline, then the product (`trigger_local --wait` from start
       to exit, sampling the qcluster tree's memory), back to back on the same machine.
    3. With `profile_dir`, one more round under py-spy, not timed.
    The cluster keeps running (the caller stops the product)."""
    config = product.work / "remote_environments.json"
    write_config(fleet, config, count=count)
    product.manage("import_environments", str(config))
    cluster = product.start_qcluster()
    wait_until_cluster_runs(cluster)
    summary = Fanout(product.label, count, idle=tree_memory(cluster.process.pid))
    slug = product.label.lower().replace(" + ", "_")
    for index in range(rounds):
        busy = busy_cores(SETTLE_SECONDS)
        raw = raw_fanout(fleet, count)
        time.sleep(SETTLE_SECONDS)
        coordination_id = f"bench_fanout_{slug}_{index + 1}"
        with PeakMemory(cluster.process.pid) as memory:
            run = trigger_local_wait(product, coordination_id, cluster)
        timeline = json.loads(product.python("bench.timeline", coordination_id).stdout)
        result = Round(
            raw=raw,
            product=run.ended - run.started,
            busy=busy,
            rss_mib=memory.rss_kib / 1024,
            pss_mib=memory.pss_kib / 1024,
            phases=phases(timeline, run),
            ssh=timeline["last_target_ended"] - timeline["claimed"],
        )
        summary.rounds.append(result)
        log(
            f"  round {index + 1}: raw paramiko {raw:.2f} s, product {result.product:.2f} s, ratio "
            f"{result.ratio:.2f}; qcluster tree peak RSS {result.rss_mib:.0f} MiB, Pss {result.pss_mib:.0f} MiB "
            f"(others busy before: {busy:.2f} cores)"
        )
    if profile_dir is not None:
        profiled_round(product, cluster, f"bench_profiled_{slug}", profile_dir / slug, log=log)
    return summary


@dataclass
class TriggerRun:
    started: float
    ended: float
    last_line_at: float | None


def trigger_local_wait(product: Product, coordination_id: str, cluster, *, prefix: tuple[str, ...] = ()) -> TriggerRun:
    """Start to exit of `manage.py trigger_local --wait`, noting when its last line came."""
    command = [*prefix, sys.executable, str(ROOT / "manage.py"), "trigger_local", "--wait"]
    command += ["--coordination-id", coordination_id]
    started = time.time()
    process = subprocess.Popen(
        command, env=product.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in process.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=TRIGGER_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise BenchError(f"trigger_local --wait still running after {TRIGGER_TIMEOUT} s; killed") from None
    ended = time.time()
    reader.join(timeout=10)
    if returncode != 0:
        output = "\n".join(line for _, line in lines)
        raise BenchError(
            f"trigger_local --wait exited {returncode}:\n{output[-3000:]}\nqcluster log:\n{cluster.output()[-3000:]}"
        )
    return TriggerRun(started, ended, lines[-1][0] if lines else None)


def phases(t: dict, run: TriggerRun) -> list[tuple[str, float | None]]:
    """Where the product's time went, from `trigger_local` starting to it exiting."""
    marks = [
        ("`trigger_local` started", run.started),
        ("coordination created (Django start-up, rows written)", t.get("created")),
        ("claimed by a worker (queue pick-up)", t.get("claimed")),
        ("first script running (first SSH handshake)", t.get("first_running")),
        ("last script running (the other handshakes)", t.get("last_running")),
        ("last target ended (the script's sleep)", t.get("last_target_ended")),
        ("coordination finished", t.get("finished")),
        ("`trigger_local` printed its last line (its 0.25 s poll)", run.last_line_at),
        ("`trigger_local` exited", run.ended),
    ]
    return [
        (f"→ {name}", None if start is None or end is None else end - start)
        for (_, start), (name, end) in zip(marks, marks[1:], strict=False)
    ]


def profiled_round(product: Product, cluster, coordination_id: str, out: Path, *, log) -> None:
    """One more fan-out, not timed: py-spy samples the whole qcluster tree and
    `trigger_local --wait` (speedscope files, open them at https://www.speedscope.app)."""
    out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    record = [py_spy, "record", "--rate", "100", "--format", "speedscope", "--nonblocking"]
    spy = subprocess.Popen(
        [*record, "--subprocesses", "--pid", str(cluster.process.pid), "--output", str(out / "qcluster.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    try:
        trigger_local_wait(
            product, coordination_id, cluster, prefix=(*record, "--output", str(out / "trigger_local.json"), "--")
        )
    finally:
        stop_process(spy, timeout=30, signum=signal.SIGINT)  # py-spy writes its profile on SIGINT
    log(f"  profiles (py-spy, speedscope format) in {out}")
