"""The benchmark's table, printed and written to docs/benchmarks.md with the machine it
ran on. bench/notes.md (how each figure is measured, what profiling found) is appended."""

import os
import platform
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTES = Path(__file__).resolve().parent / "notes.md"


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target, or not measured

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured" if self.target else ""
        return "yes" if self.met else "**no**"


def _command(*args: str) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (result.stdout or result.stderr).strip()


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as handle:
            return next(line for line in handle if line.startswith(prefix)).split(prefix, 1)[1].strip(' :=\t\n"')
    except (OSError, StopIteration):
        return "?"


def machine() -> dict[str, str]:
    memory = _first("/proc/meminfo", "MemTotal")
    if memory.endswith("kB"):
        memory = f"{int(memory.split()[0]) / 1024 / 1024:.1f} GiB"
    commit = _command("git", "rev-parse", "--short", "HEAD")
    # The report this run rewrites does not make the code it measures "uncommitted".
    dirty = _command("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks.md")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "OS": f"{_first('/etc/os-release', 'PRETTY_NAME')}, Linux {platform.release()} ({platform.machine()})",
        "CPU": f"{os.cpu_count()} cores, {_first('/proc/cpuinfo', 'model name')}",
        "memory": memory,
        "Python": sys.version.split()[0],
        "SQLite": sqlite3.sqlite_version,
        "OpenSSH": _command("ssh", "-V"),
        "load average at start (1, 5, 15 min)": load,
        "code": f"{commit}{' with uncommitted changes' if dirty and dirty != '?' else ''}",
    }


def table(rows: list[Row]) -> str:
    lines = ["| figure | measured | target | met? |", "|---|---|---|---|"]
    lines += [f"| {row.figure} | {row.value} | {row.target} | {row.verdict} |" for row in rows]
    return "\n".join(lines)


def console_table(rows: list[Row]) -> str:
    width = max(len(row.figure) for row in rows)
    value_width = max(len(row.value) for row in rows)
    target_width = max(len(row.target) for row in rows)
    return "\n".join(
        f"  {row.figure:<{width}}  {row.value:<{value_width}}  {row.target:<{target_width}}  "
        + row.verdict.replace("*", "")
        for row in rows
    )


def write(path: Path, *, rows: list[Row], info: dict, misses: list[str], details: str, command: str, seconds: float):
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in info.items())
    missed = "\n".join(f"- {miss}" for miss in misses) or "None: every target is met."
    notes = NOTES.read_text().strip() if NOTES.exists() else ""
    path.write_text(
        f"""# Benchmarks

Written by `make bench` (`{command}`, {seconds:.0f} s in all); the last sections come from
`bench/notes.md`. Not part of `make test`: every target is a figure printed here, not an
assertion.

## Machine

{machine_lines}

## Results

{table(rows)}

## Missed targets

{missed}

## Details

{details.strip()}

{notes}
"""
    )
