"""The human-readable stage log: one line per StageEvent, as `trigger_local --wait`
prints it while a coordination runs."""

from deployments.ec2.stage import REPORTED_DONE
from deployments.models import Coordination, CoordinationStatus as C, Stage, StageEvent, TargetStatus as T
from deployments.runner.budget import FAILURE_BUDGET

_TARGET_ICONS = {
    T.TRIGGERING: "🔗",
    T.RUNNING: "▶️ ",
    T.SUCCEEDED: "✅",
    T.FAILED: "❌",
    T.CANCELLED: "🛑",
    T.INTERRUPTED: "⚠️ ",
}


def _iconed(message: str, icon: str = "•") -> str:
    """A message that starts with its own icon (`📦 wave 2 of 3`, `⏸️ pausing`, `🔁 handed
    to a fresh worker task`) as it is; any other after `icon`."""
    return message if message and not message[0].isascii() else f"{icon} {message}"


def _note_line(event: StageEvent) -> str:
    """A step of the coordination that changes no status: the EC2 stage's progress, a
    notification, a wave opening, a pause, a hand-over to a fresh worker task."""
    if event.stage == Stage.EC2:
        return f"☁️  {event.message}"
    if event.stage == Stage.NOTIFY:
        return f"📣 {event.message}"
    return _iconed(event.message)


def _failed_line(event: StageEvent) -> str:
    failed = event.data.get("failed")
    total = event.data.get("total")
    if failed is None or total is None:
        return f"❌ failed: {event.message}"
    reasons = event.data.get("reasons", "")
    if f"({FAILURE_BUDGET})" in reasons:
        return f"❌ {event.message}"  # the failure budget is spent; N of M environments failed: ...
    return f"❌ {len(failed)} of {total} failed: {reasons}"


def _coordination_line(event: StageEvent) -> str:
    status = event.new_status
    if not status:
        return _note_line(event)
    if not event.old_status:
        return f"🚀 start {event.coordination.coordination_id}: {event.message}"
    if status == C.EC2_DEPLOYING:
        return f"📡 stage 1: EC2 platform: {event.message}"
    if status == C.EC2_COMPLETED:
        if event.message in ("", REPORTED_DONE):
            return "✅ EC2 done"
        return f"✅ EC2 done: {event.message}"
    if status == C.LOCAL_TRIGGERING:
        return f"💻 stage 2: triggering {event.data.get('targets', '?')} environments"
    if status == C.AWAITING_APPROVAL:
        return _iconed(event.message, "✋")  # ✋ first wave done (...): awaiting an ADMIN's approval ...
    if status == C.LOCAL_DEPLOYING:
        if event.old_status == C.AWAITING_APPROVAL:
            return f"👍 {event.message}"  # approved by ...: the rollout goes on
        if event.message == "every environment has started":
            # Under a rollout of several waves, those of the wave open now.
            waves = (event.coordination.rollout or {}).get("waves") or []
            which = "every environment of this wave" if len(waves) > 1 else "every environment"
            return f"⏳ {which} has started; waiting for the scripts"
        return f"⏳ {event.message}"
    if status == C.LOCAL_COMPLETED:
        return f"🔍 stage 3: verifying: {event.message}"
    if status == C.COMPLETED:
        total = event.coordination.targets.count()
        return f"🎉 all {total} succeeded"
    if status == C.FAILED:
        return _failed_line(event)
    if status == C.CANCELLED:
        return f"🛑 cancelled: {event.message}"
    return f"• {event.old_status} → {status}: {event.message}"


def _target_note_line(event: StageEvent) -> str:
    """A step of one environment that changes no status: a retry, a health check, a wait
    for the coordination holding the machine, a hang-up by a newer coordination."""
    env = event.environment_id
    if event.stage == Stage.VERIFY:
        icon = "🔍"
    elif "waiting_for" in event.data:
        icon = "⏳"
    elif "superseded_by" in event.data:
        icon = "✂️ "
    else:
        icon = "🔁"
    return f"{icon} {env}: {event.message}"


def _target_line(event: StageEvent) -> str:
    env = event.environment_id
    if not event.new_status:
        return _target_note_line(event)
    icon = _TARGET_ICONS.get(event.new_status, "•")
    if event.new_status in (T.TRIGGERING, T.RUNNING):
        return f"{icon} {env}: {event.message}"
    if event.new_status == T.SUCCEEDED:
        return f"{icon} {env} ({event.message})"
    reason = event.data.get("reason") or event.new_status
    return f"{icon} {env} ({reason}: {event.message})"


def format_event(event: StageEvent) -> str:
    return _target_line(event) if event.environment_id else _coordination_line(event)


def format_total(coordination: Coordination) -> str:
    """From the trigger (queue wait included) to the end, as the deploy script waited."""
    if not coordination.finished_at:
        return "⏱️  not finished"
    return f"⏱️  total {(coordination.finished_at - coordination.created_at).total_seconds():.2f} s"
