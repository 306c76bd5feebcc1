"""Figures 1 and 4 as rows, misses and details: each figure on both backends next to each
other, then where the time went (a phase table with one column per backend)."""

from bench.fanout import Backend, Fanout, Measured
from bench.report import Row

FIXED_TARGET = 0.5  # seconds around the SSH part
AT_ONCE_TARGET = 1.15  # × raw paramiko, N at once
WINDOW_TARGET = 1.10  # × raw paramiko with the same window
DETACH_TARGET = 0.10  # detached over attached
PSS_TARGET_MB = 250
MB_PER_MIB = 1024 * 1024 / 1e6


def _mb(mib: float) -> str:
    return f"{mib * MB_PER_MIB:.0f} MB"


class FanoutReport:
    def __init__(self, backends: list[Backend]):
        self.backends = backends
        self.rows: list[Row] = []
        self.misses: list[str] = []
        self.details: list[str] = []

    def fanouts(self, *, windowed: bool) -> list[Fanout]:
        return [f for b in self.backends for f in b.fanouts if (f.scenario.window is not None) == windowed]

    def build(self) -> "FanoutReport":
        at_once, windowed = self.fanouts(windowed=False), self.fanouts(windowed=True)
        for fanout in at_once:
            self.fixed_cost(fanout)
        for fanout in at_once:
            self.ratio(fanout, AT_ONCE_TARGET)
        for fanout in windowed:
            self.ratio(fanout, WINDOW_TARGET)
        for fanout in at_once:
            self.detached(fanout)
        for fanout in windowed:
            self.memory(fanout)
        for fanouts in (at_once, windowed):
            if fanouts:
                self.details.append(self.phase_table(fanouts))
        if self.backends:
            self.details.append(self.idle_memory())
        return self

    def fixed_cost(self, fanout: Fanout) -> None:
        best, raw, name = fanout.fixed(), fanout.raw, fanout.scenario.name
        met = best.fixed <= FIXED_TARGET
        mode = "" if fanout.main_mode == "default" else f", {fanout.main_mode}"
        others = "".join(
            f"; {other}: {fanout.fixed(other).fixed:.2f} s" for other in fanout.modes if other != fanout.main_mode
        )
        self.rows.append(
            Row(
                f"1. fixed cost around the SSH part, {name}, {fanout.label}{mode} (start → first handshake + last "
                "script end → exit)",
                f"{best.before:.2f} + {best.after:.2f} = {best.fixed:.2f} s{others} (raw's: {raw.fixed:.2f} s)",
                f"≤ {FIXED_TARGET} s",
                met,
            )
        )
        if not met:
            steps = "; ".join(f"{step[2:]} {value:.2f} s" for step, value in _fixed_steps(best))
            self.misses.append(
                f"Fixed cost on {fanout.label}{mode}: {best.fixed:.2f} s in its best run ({best.before:.2f} s before "
                f"the first handshake, {best.after:.2f} s after the last script ended). Step by step: {steps}."
            )

    def ratio(self, fanout: Fanout, target: float) -> None:
        product, raw, name = fanout.product(), fanout.raw, fanout.scenario.name
        ratio = fanout.ratio()
        met = ratio <= target
        mode = f", {fanout.main_mode}" if fanout.main_mode != "default" else ""
        self.rows.append(
            Row(
                f"1. {name}, {fanout.label}: raw paramiko → `trigger_local --wait`{mode}",
                f"{raw.seconds:.2f} s → {product.seconds:.2f} s (ratio {ratio:.2f})",
                f"≤ {target:.2f}×",
                met,
            )
        )
        if not met:
            extra = product.seconds - raw.seconds
            fixed = product.fixed - raw.fixed
            refill = (
                f" A slot of the window stayed empty {product.refill:.2f} s on average between a target's end and the "
                "next claim (raw's pool starts the next session at once): the next claim waits for the coordinator's "
                "main thread, which applies every report and makes every claim in turn."
                if product.refill is not None
                else ""
            )
            self.misses.append(
                f"{name} on {fanout.label}: ratio {ratio:.2f} (best product run {product.seconds:.2f} s, best raw run "
                f"{raw.seconds:.2f} s). Of the {extra:.2f} s over raw paramiko, {fixed:.2f} s is the fixed cost "
                f"around the SSH part (start-up, queue pick-up, noticing the end) and {extra - fixed:.2f} s is the "
                "SSH part itself taking longer than raw's." + refill
            )

    def detached(self, fanout: Fanout) -> None:
        name = f"1. detached over attached, {fanout.scenario.name}, {fanout.label}"
        if "detached" not in fanout.modes:
            self.rows.append(
                Row(name, "the product has no `ssh_settings.detach` switch yet", f"≤ +{DETACH_TARGET:.0%}", None)
            )
            return
        attached, detached = fanout.product("attached"), fanout.product("detached")
        cost = detached.seconds / attached.seconds - 1
        met = cost <= DETACH_TARGET
        self.rows.append(
            Row(
                name,
                f"{attached.seconds:.2f} s → {detached.seconds:.2f} s ({cost:+.0%})",
                f"≤ +{DETACH_TARGET:.0%}",
                met,
            )
        )
        if not met:
            self.misses.append(
                f"Detached mode on {fanout.label}: {cost:+.0%} over attached ({attached.seconds:.2f} → "
                f"{detached.seconds:.2f} s). The SSH part (first handshake → last script ended) took "
                f"{_ssh(attached):.2f} → {_ssh(detached):.2f} s and the end was recorded "
                f"{attached.phases[6][1] or 0:.2f} → {detached.phases[6][1] or 0:.2f} s after the last script ended; "
                "the machine started "
                f"{attached.processes or 0:.0f} → {detached.processes or 0:.0f} processes per target. Every "
                "detached run opens two sessions where an attached one opens one (start-and-follow, then the "
                "clean-up once the outcome is recorded), each a shell reading the run supervisor, and the "
                "supervisor, its script's child and the follower's tail are processes an attached run does not "
                "have: here all 200 machines are one loopback sshd on the same 2 cores as the coordinator, so "
                "that remote work adds up (on a real fleet each machine pays its own, a few tens of ms of CPU; "
                "the extra session remains). Details in bench/notes.md below."
            )

    def memory(self, fanout: Fanout) -> None:
        pss_mb, rss_mb = fanout.pss_mib * MB_PER_MIB, fanout.rss_mib * MB_PER_MIB
        met = pss_mb <= PSS_TARGET_MB
        self.rows.append(
            Row(
                f"4. qcluster tree during {fanout.scenario.name}, {fanout.label}: peak Pss (summed VmRSS)",
                f"{pss_mb:.0f} MB ({rss_mb:.0f} MB)",
                f"Pss ≤ {PSS_TARGET_MB} MB",
                met,
            )
        )
        if not met:
            backend = next(b for b in self.backends if b.label == fanout.label)
            idle = sum(row[3] for row in backend.idle) / 1024
            self.misses.append(
                f"Memory on {fanout.label}: the qcluster tree's Pss peaked at {pss_mb:.0f} MB during "
                f"{fanout.scenario.name}; idle it was {_mb(idle)}, so the run itself added "
                f"{pss_mb - idle * MB_PER_MIB:.0f} MB (the coordinator's {fanout.scenario.window or 'N'} threads, "
                "their paramiko transports and the rows it holds)."
            )

    def phase_table(self, fanouts: list[Fanout]) -> str:
        """Rounds, then the best run's phases with one column per backend and mode."""
        scenario = fanouts[0].scenario
        columns = [(f, mode) for f in fanouts for mode in f.modes]
        header = " | ".join(f"{f.label}{'' if mode == 'default' else ', ' + mode}" for f, mode in columns)
        best = [f.product(mode) for f, mode in columns]
        lines = []
        for index, (step, _) in enumerate(best[0].phases):
            values = " | ".join(_seconds(run.phases[index][1]) for run in best)
            lines.append(f"| {step} | {values} |")
        lines.append(
            "| **fixed cost** (first four steps + last four) | "
            + " | ".join(f"**{r.fixed:.2f} s**" for r in best)
            + " |"
        )
        if any(r.refill is not None for r in best):
            lines.append(
                "| a window's slot empty between a target's end and the next claim (mean) | "
                + " | ".join(_seconds(r.refill) for r in best)
                + " |"
            )
        lines.append(
            "| processes started on the machine per target (sshd's, the shells', the script's; anyone's) | "
            + " | ".join("n/a" if r.processes is None else f"{r.processes:.1f}" for r in best)
            + " |"
        )
        lines.append("| total | " + " | ".join(f"{r.seconds:.2f} s" for r in best) + " |")
        rounds = []
        for f in fanouts:
            for index, r in enumerate(f.rounds):
                products = ", ".join(
                    f"{'' if mode == 'default' else mode + ' '}{m.seconds:.2f} (fixed {m.fixed:.2f}, Pss "
                    f"{_mb(m.pss_mib)})"
                    for mode, m in r.product.items()
                )
                rounds.append(
                    f"| {f.label} | {index + 1} | {r.busy:.2f} | {r.raw.seconds:.2f} | {products} | "
                    f"{max(m.seconds for m in r.product.values()) / r.raw.seconds:.2f} |"
                )
        window = f"at most {scenario.window} sessions at once" if scenario.window else "all at once"
        return (
            f"### Fan-out, {scenario.name} ({window}), script `sleep`\n\n"
            "Each round runs the raw baseline, then the product, back to back; the figures above are the best "
            "raw run and the best product run.\n\n"
            "| backend | round | cores busy before it (others) | raw s | product s | worst ratio |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rounds) + "\n\n"
            "Where the best product run's time went (step: time since the step before):\n\n"
            f"| step | {header} |\n|---|{'---|' * len(columns)}\n" + "\n".join(lines) + "\n"
        )

    def idle_memory(self) -> str:
        lines = []
        for backend in self.backends:
            rss = sum(row[2] for row in backend.idle) / 1024
            pss = sum(row[3] for row in backend.idle) / 1024
            lines.append(f"| {backend.label} | {len(backend.idle)} | {_mb(rss)} | {_mb(pss)} |")
        return (
            "### Memory of the qcluster tree, idle\n\n"
            "The qcluster process and all its descendants before the first run (1 MB = 10^6 bytes); during "
            "each run they are sampled every 0.1 s.\n\n"
            "| backend | processes | summed VmRSS | Pss |\n|---|---|---|---|\n" + "\n".join(lines) + "\n"
        )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _fixed_steps(run: Measured) -> list[tuple[str, float]]:
    steps = run.phases[:4] + run.phases[-4:]
    return [(step, value) for step, value in steps if value is not None]


def _ssh(run: Measured) -> float:
    """First handshake begins → last script ended."""
    return sum(value or 0.0 for _, value in run.phases[4:6])
