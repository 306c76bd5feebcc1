"""`make bench`: the four figures of issue 7, each printed against its target and written
to docs/benchmarks.md with the machine it ran on.

1. Fan-out: environments whose init script sleeps 2 s, N=200 at once and N=1,000 with a
   window of 200; the raw baseline (plain paramiko, one thread per target, no Django) and
   the product end to end (`trigger_local --wait` through a real `qcluster`) in the same
   run, on the embedded default (SQLite, ORM broker) and on PostgreSQL + Redis: the ratios,
   the fixed cost around the SSH part, detached over attached.
2. Trigger latency: `POST /api/deployment/trigger-local` until the script has started on
   its target, 20 times: p50 and p95.
3. API cost as history grows: `GET history` and `GET status` with 10 and with 10,000
   coordinations (about 200,000 StageEvents): ratio of p95s.
4. Memory: peak Pss (and summed VmRSS) of the qcluster process tree during the N=1,000
   fan-out, on both.
5. Polling agents (bench/polling.py).
6. The control room at fleet size (bench/control_room.py): the admin dashboard, its live
   poll, the API's environment list and status with 3,000 environments and 10,000
   coordinations, in-process through Django's test client on SQLite.

Everything runs on 127.0.0.1 and is stopped at the end; every wait is bounded.
"""

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import api, control_room, fanout, fanout_report, polling, report, stack
from bench.fleet import make_fleet, write_config
from tests.support.databases import Postgres, Redis
from tests.support.sshd import start_sshd, stop_sshd

LATENCY_P95_TARGET = 1.0  # seconds
API_RATIO_TARGET = 1.5


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="Environments in the fan-out all at once (200).")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of N at once per database; the best counts (3).")
    parser.add_argument("--large", type=int, default=1000, help="Environments in the windowed fan-out (1,000).")
    parser.add_argument("--window", type=int, default=200, help="Its window: parallel_limit, and raw's (200).")
    parser.add_argument("--large-rounds", type=int, default=1, help="Rounds of the windowed fan-out (1; 0: none).")
    parser.add_argument("--sleep", type=float, default=2.0, help="Seconds the init script sleeps (2).")
    parser.add_argument("--latency-samples", type=int, default=20, help="Triggers timed (20).")
    parser.add_argument("--api-samples", type=int, default=100, help="Requests timed per endpoint and size (100).")
    parser.add_argument("--history-small", type=int, default=10, help="Coordinations, small history (10).")
    parser.add_argument("--history-large", type=int, default=10_000, help="Coordinations, large history (10,000).")
    parser.add_argument("--agents", type=int, default=1000, help="Simulated polling agents (1,000).")
    parser.add_argument("--fleet", type=int, default=3000, help="Environments in the control room (3,000).")
    parser.add_argument("--fleet-history", type=int, default=10_000, help="Coordinations in the control room (10,000).")
    parser.add_argument(
        "--only",
        default="sqlite,api,postgres,polling,control",
        help="Parts, comma-separated: sqlite (figures 1, 2, 4), api (figure 3), postgres (figures 1 and 4 on "
        "PostgreSQL + Redis), polling (figure 5), control (figure 6, the control room). Default: all.",
    )
    parser.add_argument("--output", default="docs/benchmarks.md", help="Where to write the report ('' for none).")
    parser.add_argument("--profile", metavar="DIR", help="Also one fan-out per database under py-spy, into DIR.")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (logs, databases).")
    options = parser.parse_args(argv)
    if options.n > options.window:
        parser.error(f"--n {options.n} at once needs --window ≥ {options.n} (the product's parallel_limit)")
    return options


def log(message: str) -> None:
    print(message, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class Bench:
    def __init__(self, options: argparse.Namespace, work: Path):
        self.options = options
        self.work = work
        self.rows: list[report.Row] = []
        self.misses: list[str] = []
        self.details: list[str] = []
        self.errors: list[str] = []
        self.backends: list[fanout.Backend] = []

    def section(self, name: str, body) -> None:
        """Run one part; a failure is reported in the table and the run goes on."""
        log(f"\n== {name}")
        started = time.monotonic()
        try:
            body()
        except Exception as exc:  # noqa: BLE001 (report it, measure the rest)
            self.errors.append(f"{name}: {exc}")
            self.rows.append(report.Row(f"{name}: failed", f"{type(exc).__name__}: {str(exc)[:150]}"))
            log(traceback.format_exc())
        log(f"   ({time.monotonic() - started:.0f} s)")

    def run(self) -> None:
        sshd = start_sshd(self.work / "sshd")
        try:
            self.fleet = make_fleet(sshd, sleep_seconds=self.options.sleep)
            log("migrating a fresh SQLite database (the template every SQLite run copies) ...")
            template = stack.sqlite_product(self.work / "template", known_hosts=sshd.known_hosts)
            self.template = template.work / "db.sqlite3"
            parts = {part.strip() for part in self.options.only.split(",")}
            n = f"{self.options.n} and {self.options.large:,}"
            if "sqlite" in parts:
                self.section(f"1, 2, 4. fan-out N={n}, trigger latency, memory: SQLite", self.embedded)
            if "api" in parts:
                self.section("3. API cost as history grows: SQLite", self.history)
            if "postgres" in parts:
                self.section(f"1, 4. fan-out N={n}: PostgreSQL + Redis", self.postgres)
            if "polling" in parts:
                self.section(f"5. {self.options.agents:,} polling agents: SQLite", self.polling)
            if "control" in parts:
                self.section(f"6. control room, {self.options.fleet:,} environments", lambda: control_room.add(self))
        finally:
            stop_sshd(sshd)
        built = fanout_report.FanoutReport(self.backends).build()
        self.rows[:0] = built.rows
        self.misses[:0] = built.misses
        self.details[:0] = built.details

    # --- 1, 2 and 4 on SQLite; 1 on PostgreSQL + Redis -----------------------------------------

    def sqlite(self, name: str) -> stack.Product:
        return stack.sqlite_product(self.work / name, known_hosts=self.fleet.sshd.known_hosts, template=self.template)

    def run_fanout(self, product: stack.Product) -> fanout.Backend:
        profile = Path(self.options.profile).resolve() if self.options.profile else None
        o = self.options
        scenarios = fanout.scenarios(
            at_once=o.n, large=o.large, window=o.window, rounds=o.rounds, large_rounds=o.large_rounds
        )
        scenarios = [scenario for scenario in scenarios if scenario.rounds > 0]
        return fanout.fanout(
            product,
            self.fleet,
            scenarios,
            window=o.window,
            log=log,
            on_backend=self.backends.append,
            profile_dir=profile,
        )

    def embedded(self) -> None:
        product = self.sqlite("sqlite")
        try:
            self.run_fanout(product)
            log("trigger latency (POST trigger-local → script started):")
            client = api.Client(product.start_web(), api.api_user(product))
            latency = api.trigger_latency(product, self.fleet, client, samples=self.options.latency_samples, log=log)
            self.latency_rows(latency)
        finally:
            product.stop()

    def postgres(self) -> None:
        missing = stack.missing_postgres_redis()
        if missing:
            self.rows.append(
                report.Row(f"1. fan-out N={self.options.n}, PostgreSQL + Redis", missing, "figures 1 and 4")
            )
            return
        postgres = redis = product = None
        try:
            postgres = Postgres(self.work / "postgres")
            redis = Redis(self.work / "redis")
            env = stack.product_environment(
                database_url=postgres.create_database("bench"),
                known_hosts=self.fleet.sshd.known_hosts,
                redis_url=redis.url,
            )
            product = stack.Product(env, self.work / "pg", "PostgreSQL + Redis")
            product.work.mkdir(parents=True, exist_ok=True)
            product.manage("migrate", "--noinput", timeout=600)
            self.run_fanout(product)
        finally:
            for service in (product, redis, postgres):
                if service is not None:
                    service.stop()

    def latency_rows(self, latency: api.Samples) -> None:
        met = latency.p95 < LATENCY_P95_TARGET
        self.rows += [
            report.Row("2. trigger latency p50, SQLite (POST → script started)", ms(latency.p50)),
            report.Row(
                f"2. trigger latency p95, SQLite ({len(latency.values)} triggers)",
                ms(latency.p95),
                f"< {ms(LATENCY_P95_TARGET)}",
                met,
            ),
        ]
        if not met:
            self.misses.append(f"Trigger latency: p95 {ms(latency.p95)}; the sorted samples are in the details.")
        values = ", ".join(f"{value * 1000:.0f}" for value in sorted(latency.values))
        self.details.append(f"### Trigger latency, SQLite\n\nSorted, ms: {values}.\n")

    # --- 5 ---------------------------------------------------------------------------------

    def polling(self) -> None:
        product = self.sqlite("polling")
        try:
            figures = polling.measure(product, count=self.options.agents, log=log)
        finally:
            product.stop()
        rows, misses, details = polling.report_parts(figures)
        self.rows += rows
        self.misses += misses
        self.details.append(details)

    # --- 3 ---------------------------------------------------------------------------------

    def history(self) -> None:
        small, large = self.options.history_small, self.options.history_large
        products, clients, sizes = [], [], {}
        try:
            for name, count in (("small", small), ("large", large)):
                product = self.sqlite(f"history-{name}")
                products.append(product)
                config = product.work / "remote_environments.json"
                write_config(self.fleet, config, count=self.options.n)
                product.manage("import_environments", str(config))
                token = api.api_user(product)
                started = time.monotonic()
                sizes[name] = api.seed_history(product, coordinations=count)
                log(f"  {name}: seeded {sizes[name]} in {time.monotonic() - started:.1f} s")
                clients.append(api.Client(product.start_web(), token))
            costs = api.history_cost(*clients, samples=self.options.api_samples, log=log)
        finally:
            for product in products:
                product.stop()
        for cost in costs:
            met = cost.ratio <= API_RATIO_TARGET
            self.rows.append(
                report.Row(
                    f"3. GET {cost.path}: p95 at {small:,} → {large:,} coordinations",
                    f"{cost.small.p95 * 1000:.1f} → {cost.large.p95 * 1000:.1f} ms (ratio {cost.ratio:.2f})",
                    f"ratio ≤ {API_RATIO_TARGET}",
                    met,
                )
            )
            if not met:
                self.misses.append(
                    f"GET {cost.path}: p95 ratio {cost.ratio:.2f} ({cost.small.p95 * 1000:.1f} → "
                    f"{cost.large.p95 * 1000:.1f} ms); see bench/notes.md below."
                )
        lines = "\n".join(
            f"| GET {c.path} | {c.small.p50 * 1000:.1f} | {c.small.p95 * 1000:.1f} | {c.large.p50 * 1000:.1f} | "
            f"{c.large.p95 * 1000:.1f} |"
            for c in costs
        )
        self.details.append(
            "### API cost as history grows, SQLite\n\n"
            f"Rows seeded: {sizes}. {self.options.api_samples} requests timed per endpoint and size after "
            f"{api.WARMUP} warm-up requests.\n\n"
            f"| endpoint | p50 ms ({small:,}) | p95 ms ({small:,}) | p50 ms ({large:,}) | p95 ms ({large:,}) |\n"
            f"|---|---|---|---|---|\n{lines}\n"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_args(argv)
    started = time.monotonic()
    info = report.machine()
    log("machine: " + "; ".join(f"{key} {value}" for key, value in info.items()))
    work = Path(tempfile.mkdtemp(prefix="pa-bench-"))
    work.chmod(0o755)  # sshd reads authorized_keys in here as the test user
    bench = Bench(options, work)
    try:
        bench.run()
    finally:
        if options.keep:
            log(f"work folder kept: {work}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    seconds = time.monotonic() - started
    log(f"\n== results ({seconds:.0f} s)\n{report.console_table(bench.rows)}")
    for miss in bench.misses:
        log(f"missed: {miss}")
    if options.output:
        report.write(
            Path(options.output),
            rows=bench.rows,
            info=info,
            misses=bench.misses,
            details="\n".join(bench.details),
            command=" ".join(["python -m bench.run", *argv]),
            seconds=seconds,
        )
        log(f"written to {options.output}")
    for error in bench.errors:
        log(f"error: {error}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
