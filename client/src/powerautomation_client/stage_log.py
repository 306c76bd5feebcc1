"""The stage log: one line per event, as `manage.py trigger_local --wait` prints it.

A copy of the platform's deployments/stage_log.py, over the events API's dicts (this
package must import without Django). tests/client/test_stage_log.py formats the same
events with both and compares, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

Event = Mapping[str, Any]

REPORTED_DONE = "EC2 platform stage done"  # deployments.ec2.stage.REPORTED_DONE
FAILURE_BUDGET = "failure_budget"  # deployments.runner.budget.FAILURE_BUDGET

_TARGET_ICONS = {
    "triggering": "🔗",
    "running": "▶️ ",
    "succeeded": "✅",
    "failed": "❌",
    "cancelled": "🛑",
    "interrupted": "⚠️ ",
}


class Run:
    """What the lines need to know of the coordination besides its events: its id, its
    number of targets, its waves."""

    def __init__(self, coordination_id: str, total: int, waves: list | None = None) -> None:
        self.coordination_id = coordination_id
        self.total = total
        self.waves = waves or []

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Run:
        """From a coordination record (GET coordinations/<id>/)."""
        rollout = record.get("rollout") or {}
        return cls(record["coordination_id"], int((record.get("progress") or {}).get("total", 0)), rollout.get("waves"))


def _iconed(message: str, icon: str = "•") -> str:
    return message if message and not message[0].isascii() else f"{icon} {message}"


def _note_line(event: Event) -> str:
    if event["stage"] == "ec2":
        return f"☁️  {event['message']}"
    if event["stage"] == "notify":
        return f"📣 {event['message']}"
    return _iconed(event["message"])


def _failed_line(event: Event) -> str:
    data = event.get("data") or {}
    failed, total = data.get("failed"), data.get("total")
    if failed is None or total is None:
        return f"❌ failed: {event['message']}"
    reasons = data.get("reasons", "")
    if f"({FAILURE_BUDGET})" in reasons:
        return f"❌ {event['message']}"
    return f"❌ {len(failed)} of {total} failed: {reasons}"


def _local_deploying_line(event: Event, run: Run) -> str:
    if event["old_status"] == "awaiting_approval":
        return f"👍 {event['message']}"
    if event["message"] == "every environment has started":
        which = "every environment of this wave" if len(run.waves) > 1 else "every environment"
        return f"⏳ {which} has started; waiting for the scripts"
    return f"⏳ {event['message']}"


def _coordination_line(event: Event, run: Run) -> str:
    status, message = event["new_status"], event["message"]
    if not status:
        return _note_line(event)
    if not event["old_status"]:
        return f"🚀 start {run.coordination_id}: {message}"
    if status == "ec2_deploying":
        return f"📡 stage 1: EC2 platform: {message}"
    if status == "ec2_completed":
        return "✅ EC2 done" if message in ("", REPORTED_DONE) else f"✅ EC2 done: {message}"
    if status == "local_triggering":
        return f"💻 stage 2: triggering {(event.get('data') or {}).get('targets', '?')} environments"
    if status == "awaiting_approval":
        return _iconed(message, "✋")
    if status == "local_deploying":
        return _local_deploying_line(event, run)
    if status == "local_completed":
        return f"🔍 stage 3: verifying: {message}"
    if status == "completed":
        return f"🎉 all {run.total} succeeded"
    if status == "failed":
        return _failed_line(event)
    if status == "cancelled":
        return f"🛑 cancelled: {message}"
    return f"• {event['old_status']} → {status}: {message}"


def _target_note_line(event: Event) -> str:
    data = event.get("data") or {}
    if event["stage"] == "verify":
        icon = "🔍"
    elif "waiting_for" in data:
        icon = "⏳"
    elif "superseded_by" in data:
        icon = "✂️ "
    else:
        icon = "🔁"
    return f"{icon} {event['environment_id']}: {event['message']}"


def _target_line(event: Event) -> str:
    env, status = event["environment_id"], event["new_status"]
    if not status:
        return _target_note_line(event)
    icon = _TARGET_ICONS.get(status, "•")
    if status in ("triggering", "running"):
        return f"{icon} {env}: {event['message']}"
    if status == "succeeded":
        return f"{icon} {env} ({event['message']})"
    reason = (event.get("data") or {}).get("reason") or status
    return f"{icon} {env} ({reason}: {event['message']})"


def format_event(event: Event, run: Run) -> str:
    return _target_line(event) if event.get("environment_id") else _coordination_line(event, run)


def _time(text: str) -> datetime:
    # Python before 3.11 does not read the `Z` DRF writes.
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def format_total(record: dict[str, Any]) -> str:
    """From the trigger (queue wait included) to the end, as the deploy script waited."""
    if not record.get("finished_at"):
        return "⏱️  not finished"
    seconds = (_time(record["finished_at"]) - _time(record["created_at"])).total_seconds()
    return f"⏱️  total {seconds:.2f} s"


def duration(record: Mapping[str, Any]) -> float | None:
    if not record.get("finished_at"):
        return None
    return (_time(record["finished_at"]) - _time(record["created_at"])).total_seconds()
