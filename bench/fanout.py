"""Figures 1 and 4: the product's fan-out end to end against the raw-SSH baseline, the fixed
cost around its SSH part, and the qcluster tree's memory while it runs.

The clocks, all CLOCK_REALTIME on this one machine:
- the benchmark's: `trigger_local` (or the raw baseline) started and exited;
- the kernel's: when sshd forked the child serving the first connection of a run (it does
  as it accepts it, before the handshake): the first SSH handshake beginning;
- the scripts' own: each writes `date +%s.%N` when it starts and when it ends (bench.fleet);
- the product's rows (bench.timeline), for where its own time went in between."""

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

from bench.fleet import AT_ONCE_TAG, Fleet, raw_fanout, script_times, write_config
from bench.stack import BenchError, PeakMemory, Product, tree_memory
from tests.support.processes import ROOT, stop_process

CLUSTER_START_TIMEOUT = 60
TRIGGER_TIMEOUT = 600
SETTLE_SECONDS = 1.0  # for sshd to reap the sessions of the run before
SESSION_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class Scenario:
    name: str
    count: int
    window: int | None  # at most this many sessions at once; None: all at once
    rounds: int
    tags: str | None = None  # trigger_local --tags (None: every enabled environment)
    modes: tuple[str, ...] = ("default",)  # "attached", "detached"; "default" leaves ssh_settings alone


@dataclass
class Measured:
    """One run, product or raw."""

    seconds: float
    before: float  # start → first handshake begins
    after: float  # last script ended → exit
    phases: list[tuple[str, float | None]] = field(default_factory=list)
    rss_mib: float = 0.0
    pss_mib: float = 0.0
    refill: float | None = None  # with a window: mean seconds from a target's end to the next claim
    processes: float | None = None  # processes the machine started per target (sshd's, the scripts', ...)

    @property
    def fixed(self) -> float:
        return self.before + self.after


@dataclass
class Round:
    busy: float  # cores busy in the second before the round: anything else on the machine
    raw: Measured
    product: dict[str, Measured]  # by mode


@dataclass
class Fanout:
    """Every round of one scenario on one backend. Each figure is its best round (the one
    least disturbed by anything else on the machine)."""

    label: str
    scenario: Scenario
    rounds: list[Round] = field(default_factory=list)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.rounds[0].product) if self.rounds else ()

    @property
    def main_mode(self) -> str:
        """The product's default: detached once it has the switch."""
        return "detached" if "detached" in self.modes else self.modes[0]

    @property
    def raw(self) -> Measured:
        return min((r.raw for r in self.rounds), key=lambda m: m.seconds)

    def product(self, mode: str | None = None) -> Measured:
        return min((r.product[mode or self.main_mode] for r in self.rounds), key=lambda m: m.seconds)

    def ratio(self, mode: str | None = None) -> float:
        return self.product(mode).seconds / self.raw.seconds

    def fixed(self, mode: str | None = None) -> Measured:
        """The run with the smallest fixed cost."""
        return min((r.product[mode or self.main_mode] for r in self.rounds), key=lambda m: m.fixed)

    @property
    def rss_mib(self) -> float:
        return max(m.rss_mib for r in self.rounds for m in r.product.values())

    @property
    def pss_mib(self) -> float:
        return max(m.pss_mib for r in self.rounds for m in r.product.values())


@dataclass
class Backend:
    label: str
    detach_supported: bool
    idle: list[tuple[int, str, int, int]]  # the qcluster tree before the runs
    fanouts: list[Fanout] = field(default_factory=list)


def processes_started() -> int:
    """Processes started on the machine since boot (anyone's: others' add a little)."""
    with open("/proc/stat") as handle:
        return int(next(line for line in handle if line.startswith("processes ")).split()[1])


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


class FirstSession:
    """When sshd began serving the first connection of a run: the start time the kernel
    recorded for the earliest of its children (sshd forks one per connection as it accepts
    it, before the handshake), 10 ms resolution (clock ticks). Polled every 10 ms, but a
    late look still finds it: each child lives for its whole session (the script's sleep)."""

    def __init__(self, sshd_pid: int):
        self.sshd_pid = sshd_pid
        self.earliest: int | None = None  # clock ticks since boot
        self._known: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="first-session", daemon=True)

    @property
    def seen(self) -> float | None:
        """Seconds since the epoch, or None when no connection came."""
        if self.earliest is None:
            return None
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return boot + (self.earliest + 0.5) / os.sysconf("SC_CLK_TCK")  # the middle of its tick

    def _look(self) -> None:
        try:
            with open(f"/proc/{self.sshd_pid}/task/{self.sshd_pid}/children") as handle:
                children = {int(pid) for pid in handle.read().split()}
        except OSError:
            return
        for pid in children - self._known:
            self._known.add(pid)
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    # After the command's closing parenthesis: field 3 (state) onwards; 22 is starttime.
                    started = int(handle.read().rsplit(")", 1)[1].split()[19])
            except (OSError, IndexError, ValueError):
                continue
            self.earliest = started if self.earliest is None else min(self.earliest, started)

    def _run(self) -> None:
        self._known = set(self._children_now())  # the sessions of a run before are not this one's
        while not self._stop.wait(SESSION_POLL_SECONDS):
            self._look()

    def _children_now(self) -> list[int]:
        try:
            with open(f"/proc/{self.sshd_pid}/task/{self.sshd_pid}/children") as handle:
                return [int(pid) for pid in handle.read().split()]
        except OSError:
            return []

    def __enter__(self) -> "FirstSession":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._look()


def fanout(
    product: Product,
    fleet: Fleet,
    scenarios: list[Scenario],
    *,
    window: int,
    log,
    on_backend=None,
    profile_dir: Path | None = None,
) -> Backend:
    """1. Register the largest scenario's environments (import_environments; the first
       `at_once` tagged AT_ONCE_TAG), `parallel_limit` = `window`; start a qcluster.
    2. Each scenario, each round: the raw baseline, then the product (`trigger_local --wait`
       from start to exit, sampling the qcluster tree's memory) once per mode, back to back.
    3. With `profile_dir`, one more run of the first scenario under py-spy, not timed.
    `on_backend` gets the result as soon as it exists. The cluster keeps running (the caller
    stops the product)."""
    config = product.work / "remote_environments.json"
    at_once = max((s.count for s in scenarios if s.tags), default=0)
    write_config(fleet, config, count=max(s.count for s in scenarios), at_once=at_once, parallel_limit=window)
    product.manage("import_environments", str(config))
    supported = json.loads(product.python("bench.ssh_settings", "check").stdout)["supported"]
    cluster = product.start_qcluster()
    wait_until_cluster_runs(cluster)
    backend = Backend(product.label, supported, idle=tree_memory(cluster.process.pid))
    if on_backend is not None:
        on_backend(backend)  # what was measured is reported even when a later run fails
    slug = product.label.lower().replace(" + ", "_")
    for scenario in scenarios:
        # Without the switch (a product before issue 16) the product runs as it does.
        modes = scenario.modes if supported else ("default",)
        summary = Fanout(product.label, scenario)
        for index in range(scenario.rounds):
            busy = busy_cores(SETTLE_SECONDS)
            run = f"bench_raw_{slug}_{scenario.count}_{index + 1}"
            with FirstSession(fleet.sshd.process.pid) as first:
                raw = raw_fanout(fleet, scenario.count, run=run, window=scenario.window)
            times = script_times(fleet, run)
            raw_measured = Measured(
                raw.seconds, (first.seen or raw.first_connect) - raw.started, raw.ended - times.last_end
            )
            result = Round(busy, raw_measured, {})
            for mode in modes:
                if mode != "default":
                    product.python("bench.ssh_settings", "detach" if mode == "detached" else "attach")
                time.sleep(SETTLE_SECONDS)
                coordination_id = f"bench_fanout_{slug}_{scenario.count}_{mode}_{index + 1}"
                result.product[mode] = product_run(product, fleet, cluster, coordination_id, scenario)
            summary.rounds.append(result)
            if len(summary.rounds) == 1:
                backend.fanouts.append(summary)
            products = ", ".join(
                f"{mode} {m.seconds:.2f} s (ratio {m.seconds / raw.seconds:.2f}, fixed {m.fixed:.2f} s)"
                for mode, m in result.product.items()
            )
            log(
                f"  {scenario.name} round {index + 1}: raw paramiko {raw.seconds:.2f} s, product {products}; "
                f"qcluster tree peak Pss {max(m.pss_mib for m in result.product.values()):.0f} MiB "
                f"(others busy before: {busy:.2f} cores)"
            )
    if profile_dir is not None:
        first = scenarios[0]
        profiled_round(product, cluster, f"bench_profiled_{slug}", profile_dir / slug, tags=first.tags, log=log)
    return backend


def product_run(product: Product, fleet: Fleet, cluster, coordination_id: str, scenario: Scenario) -> Measured:
    forks = processes_started()
    with PeakMemory(cluster.process.pid) as memory, FirstSession(fleet.sshd.process.pid) as first:
        run = trigger_local_wait(product, coordination_id, cluster, tags=scenario.tags)
    forks = processes_started() - forks - 1  # not trigger_local itself
    timeline = json.loads(product.python("bench.timeline", coordination_id).stdout)
    times = script_times(fleet, coordination_id)
    if times.ends != scenario.count or timeline["targets"] != {"succeeded": scenario.count}:
        raise BenchError(f"{coordination_id}: {times.ends} scripts ended, targets {timeline['targets']}")
    if first.seen is None:
        raise BenchError(f"{coordination_id}: no connection to the sshd was seen")
    return Measured(
        seconds=run.ended - run.started,
        before=first.seen - run.started,
        after=run.ended - times.last_end,
        phases=phases(
            timeline, run, first_connection=first.seen, first_start=times.first_start, last_end=times.last_end
        ),
        rss_mib=memory.rss_kib / 1024,
        pss_mib=memory.pss_kib / 1024,
        refill=refill_lag(timeline["claims"], timeline["ends"], scenario.window),
        processes=forks / scenario.count,
    )


def refill_lag(claims: list[float], ends: list[float], window: int | None) -> float | None:
    """Mean seconds from the k-th recorded end to the (window + k)-th claim: how long a
    slot of the window stays empty (raw paramiko's pool starts the next session at once)."""
    if not window or len(claims) <= window:
        return None
    lags = [claims[window + k] - ends[k] for k in range(len(claims) - window)]
    return sum(lags) / len(lags)


@dataclass
class TriggerRun:
    started: float
    ended: float
    last_line_at: float | None


def trigger_local_wait(
    product: Product, coordination_id: str, cluster, *, tags: str | None = None, prefix: tuple[str, ...] = ()
) -> TriggerRun:
    """Start to exit of `manage.py trigger_local --wait`, noting when its last line came."""
    command = [*prefix, sys.executable, str(ROOT / "manage.py"), "trigger_local", "--wait"]
    command += ["--coordination-id", coordination_id]
    if tags:
        command += ["--tags", tags]
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


# Where the product's time went, in the order it happens. The first four and the last four
# are the fixed cost; in between is the SSH part raw paramiko also does.
PHASES = (
    ("`trigger_local` started", "started"),
    ("coordination created (Django start-up, its rows written)", "created"),
    ("claimed by a worker (queue pick-up)", "claimed"),
    ("first target claimed (the worker loads the run)", "first_triggering"),
    ("first SSH handshake begins (claiming the first window's targets)", "first_connection"),
    ("first script started (one handshake, the session)", "first_start"),
    ("last script ended (the other handshakes, the scripts)", "last_end"),
    ("last target's end recorded (the worker noticing it)", "last_target_ended"),
    ("coordination finished", "finished"),
    ("`trigger_local` printed its last line (its poll)", "last_line"),
    ("`trigger_local` exited", "exited"),
)


def phases(t: dict, run: TriggerRun, **marks: float) -> list[tuple[str, float | None]]:
    """Each step's time from the one before, from `trigger_local` starting to it exiting."""
    times = {**t, **marks, "started": run.started, "last_line": run.last_line_at, "exited": run.ended}
    points = [(name, times.get(key)) for name, key in PHASES]
    return [
        (f"→ {name}", None if start is None or end is None else end - start)
        for (_, start), (name, end) in zip(points, points[1:], strict=False)
    ]


def profiled_round(product: Product, cluster, coordination_id: str, out: Path, *, tags: str | None, log) -> None:
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
            product,
            coordination_id,
            cluster,
            tags=tags,
            prefix=(*record, "--output", str(out / "trigger_local.json"), "--"),
        )
    finally:
        stop_process(spy, timeout=30, signum=signal.SIGINT)  # py-spy writes its profile on SIGINT
    log(f"  profiles (py-spy, speedscope format) in {out}")


def scenarios(*, at_once: int, large: int, window: int, rounds: int, large_rounds: int) -> list[Scenario]:
    return [
        Scenario(f"N={at_once} at once", at_once, None, rounds, tags=AT_ONCE_TAG, modes=("attached", "detached")),
        Scenario(f"N={large:,}, window {window}", large, window, large_rounds, modes=("detached",)),
    ]
