"""Following a run through its events cursor (`coordinations/<id>/events/?after=N`):
only new events cross the wire, never whole records. A dropped connection or a web
process restart costs nothing: the next request resumes after the last event seen."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

from powerautomation_client.api import Client
from powerautomation_client.errors import ServerError, ThrottledError, UnreachableError
from powerautomation_client.stage_log import Run, format_event, format_total

POLL_SECONDS = 0.5
NO_WORKER_HINT_SECONDS = 10
# How long the platform may stay away (a restart, a network cut) before following gives up.
RECONNECT_SECONDS = 300.0
OUTPUT_READ_BYTES = 1024 * 1024
# Per environment and poll, at most this many pieces are read (the rest at the next poll),
# and a line longer than this many characters is shown in parts.
OUTPUT_PIECES_PER_POLL = 8
OUTPUT_PIECES_AT_END = 16  # the platform keeps 10 MiB of an environment's output at most
MAX_LINE_CHARS = 64 * 1024

# What `follow` yields: ("log", a stage log line), ("output", an output line), ("hint", how
# to approve a run awaiting approval), ("notice", for the person waiting, not the log: a
# reconnect, no worker yet).
Item = tuple[str, str]


def shown_line(text: str) -> str:
    """A line as a terminal may print it: a hostile machine's escape sequences are shown,
    not obeyed."""
    return "".join(
        char if char == "\t" or not unicodedata.category(char).startswith("C") else repr(char)[1:-1] for char in text
    )


def approval_hint(coordination_id: str) -> str:
    return (
        f"✋ awaiting approval: powerautomation approve {coordination_id} (or the admin's Approve); "
        f"powerautomation cancel {coordination_id} stops it"
    )


class OutputFollower:
    """Every started environment's output lines as they arrive, prefixed with its id
    (whole lines only; the last one once the run has ended)."""

    def __init__(self, client: Client, coordination_id: str) -> None:
        self.client = client
        self.coordination_id = coordination_id
        self.started: list[str] = []
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, str] = {}

    def saw(self, event: dict[str, Any]) -> None:
        environment_id = event.get("environment_id")
        if environment_id and event.get("new_status") and environment_id not in self.offsets:
            self.offsets[environment_id] = 0
            self.started.append(environment_id)

    def lines(self, *, final: bool = False) -> list[str]:
        shown: list[str] = []
        for environment_id in self.started:
            for _ in range(OUTPUT_PIECES_AT_END if final else OUTPUT_PIECES_PER_POLL):
                offset = self.offsets[environment_id]
                piece = self.client.output(self.coordination_id, environment_id, offset=offset, limit=OUTPUT_READ_BYTES)
                if piece["next_offset"] <= offset:
                    break
                self.offsets[environment_id] = piece["next_offset"]
                *complete, rest = (self.partial.get(environment_id, "") + piece["text"]).split("\n")
                while len(rest) > MAX_LINE_CHARS:
                    complete.append(rest[:MAX_LINE_CHARS])
                    rest = rest[MAX_LINE_CHARS:]
                self.partial[environment_id] = rest
                shown.extend(f"[{environment_id}] {shown_line(line)}" for line in complete)
                if piece["complete"]:
                    break
            if final and self.partial.get(environment_id):
                shown.append(f"[{environment_id}] {shown_line(self.partial.pop(environment_id))}")
        return shown


class Follower:
    """Follow one coordination to its end (or `timeout` seconds). After `follow()` is
    exhausted: `record` (the coordination's final record, None on timeout), `status`,
    `timed_out`."""

    def __init__(self, client: Client, coordination_id: str, *, output: bool = False) -> None:
        self.client = client
        self.coordination_id = coordination_id
        self.output = OutputFollower(client, coordination_id) if output else None
        self.cursor = 0
        self.record: dict[str, Any] | None = None
        self.status = "pending"
        self.timed_out = False

    def _page(self, lost_since: float | None) -> tuple[dict[str, Any] | None, str | None]:
        """The next events page, or (None, why) when the platform is away for now."""
        try:
            return self.client.events(self.coordination_id, after=self.cursor, retry=False), None
        except (UnreachableError, ServerError, ThrottledError) as exc:
            if lost_since is not None and time.monotonic() - lost_since > RECONNECT_SECONDS:
                raise
            return None, str(exc)

    def follow(self, *, timeout: float | None = None) -> Iterator[Item]:
        started = time.monotonic()
        run = Run.of(self.client.coordination(self.coordination_id))
        told_approval = hinted = False
        lost_since: float | None = None
        while True:
            page, trouble = self._page(lost_since)
            if page is None:
                if lost_since is None:
                    lost_since = time.monotonic()
                    yield "notice", f"⏳ {trouble}: reconnecting (resuming after event {self.cursor})"
            else:
                if lost_since is not None:
                    lost_since = None
                    yield "notice", "🔌 reconnected"
                yield from self._events(page["events"], run)
                # `finished` is read before the events on the platform: when it holds, none follow them.
                finished = page["finished"] and not page["has_more"]
                if self.output is not None:
                    yield from (("output", line) for line in self.output.lines(final=finished))
                if finished:
                    break
                self.status = page["coordination_status"]
                if self.status == "awaiting_approval" and not told_approval and not page["has_more"]:
                    told_approval = True
                    yield "hint", approval_hint(self.coordination_id)
            waited = time.monotonic() - started
            if page is not None and page["has_more"] and (timeout is None or waited < timeout):
                continue  # more events at once (and --timeout holds even for a platform with endless events)
            if timeout is not None and waited >= timeout:
                self.timed_out = True
                yield (
                    "log",
                    (
                        f"⏳ still {self.status} after {timeout:g} s; the run goes on "
                        f"(powerautomation status {self.coordination_id})"
                    ),
                )
                return
            if not hinted and waited > NO_WORKER_HINT_SECONDS and self.status == "pending":
                hinted = True
                yield "notice", "⏳ no worker has picked this up yet: is the platform's `manage.py qcluster` running?"
            time.sleep(POLL_SECONDS)
        self.record = self.client.coordination(self.coordination_id)
        self.status = self.record["status"]
        yield "log", format_total(self.record)

    def _events(self, events: Iterable[dict[str, Any]], run: Run) -> Iterator[Item]:
        for event in events:
            self.cursor = event["id"]
            if self.output is not None:
                self.output.saw(event)
            yield "log", format_event(event, run)
