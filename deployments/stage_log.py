"""The human-readable stage log: one line per StageEvent, as `trigger_local --wait`
prints it while a coordination runs."""

from deployments.ec2.stage import REPORTED_DONE
from deployments.models import Coordination, CoordinationStatus as C, Stage, StageEvent, TargetStatus as T

_TARGET_ICONS = {
    T.TRIGGERING: "🔗",
    T.RUNNING: "▶️ ",
    T.SUCCEEDED: "✅",
    T.FAILED: "❌",
    T.CANCELLED: "🛑",
    T.INTERRUPTED: "⚠️ ",
}


def _coordination_line(event: StageEvent) -> str:
    status = event.new_status
    if not status and event.stage == Stage.EC2:
        return f"☁️  {event.message}"
    if not status and event.stage == Stage.NOTIFY:
        return f"📣 {event.message}"
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
    if status == C.LOCAL_DEPLOYING:
        return "⏳ every environment has started; waiting for the scripts"
    if status == C.LOCAL_COMPLETED:
        return f"🔍 stage 3: verifying: {event.message}"
    if status == C.COMPLETED:
        total = event.coordination.targets.count()
        return f"🎉 all {total} succeeded"
    if status == C.FAILED:
        failed = event.data.get("failed")
        total = event.data.get("total")
        if failed is not None and total is not None:
            return f"❌ {len(failed)} of {total} failed: {event.data.get('reasons', '')}"
        return f"❌ failed: {event.message}"
    if status == C.CANCELLED:
        return f"🛑 cancelled: {event.message}"
    return f"• {event.old_status} → {status}: {event.message}"


def _target_line(event: StageEvent) -> str:
    env = event.environment_id
    if not event.new_status:
        icon = "🔍" if event.stage == Stage.VERIFY else "🔁"
        return f"{icon} {env}: {event.message}"
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
