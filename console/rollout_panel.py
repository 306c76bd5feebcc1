"""A coordination's rollout as its page shows it: the policy it runs under (as stored on it
when it was created), its waves with what each has done, the wave open now, a pause's
end, and the approval after the first wave."""

from collections import Counter

from console.presenters import CONCURRENCY_TEXT, budget_text
from deployments.models import (
    TARGET_TERMINAL,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    TargetStatus as T,
)
from environments.rollout import APPROVAL


def _wave_state(coordination: Coordination, number: int, size: int, count: Counter) -> str:
    """ended; skipped (never opened: every target cancelled before its turn); open (some
    target started or the runner opened it, and not all have ended); next."""
    if sum(count[status] for status in TARGET_TERMINAL) >= size:
        return "skipped" if count[T.CANCELLED] >= size and number > coordination.wave else "ended"
    if number <= coordination.wave or count.total() > count[T.PENDING]:
        return "open"
    return "next"


def wave_rows(coordination: Coordination, targets: list[CoordinationTarget]) -> list[dict]:
    """Each wave: its number, size, state and its targets' outcomes so far. A
    coordination from before rollouts has one wave of every target."""
    sizes = (coordination.rollout or {}).get("waves") or [len(targets)]
    counts: dict[int, Counter] = {}
    for target in targets:
        counts.setdefault(target.wave, Counter())[target.status] += 1
    rows = []
    for number, size in enumerate(sizes, start=1):
        count = counts.get(number, Counter())
        rows.append(
            {
                "number": number,
                "size": size,
                "state": _wave_state(coordination, number, size, count),
                "succeeded": count[T.SUCCEEDED],
                "failed": count[T.FAILED] + count[T.INTERRUPTED],
                "cancelled": count[T.CANCELLED],
                "running": count[T.TRIGGERING] + count[T.RUNNING],
            }
        )
    return rows


def _after_first_text(plan: dict) -> str:
    first, between = plan.get("pause_after_first_batch"), plan.get("batch_pause_seconds")
    if first == APPROVAL:
        return "wait for an ADMIN's approval"
    if first:
        return f"pause {first} s"
    return f"pause {between} s (the pause between waves)" if between else "go straight on"


def _budget_text(plan: dict) -> str:
    budget = plan.get("failure_budget")
    if budget is None:
        return "none: every environment runs, however many fail"
    given = plan.get("max_failures")
    return budget_text(budget) + (f" (max failures {given})" if isinstance(given, str) else "")


def rollout_context(coordination: Coordination, targets: list[CoordinationTarget]) -> dict:
    """The rollout panel of a coordination's page (and its live updates)."""
    plan = coordination.rollout or {}
    waves = wave_rows(coordination, targets)
    concurrency = plan.get("concurrency")
    return {
        "waves": waves,
        "wave_count": len(waves),
        "awaiting": coordination.status == C.AWAITING_APPROVAL,
        "waiting_after_approval": sum(wave["size"] for wave in waves[1:]),
        "gated": plan.get("pause_after_first_batch") == APPROVAL and len(waves) > 1,
        "after_first": _after_first_text(plan),
        "between": f"pause {plan['batch_pause_seconds']} s" if plan.get("batch_pause_seconds") else "no pause",
        "budget": _budget_text(plan),
        "concurrency": f"{concurrency}: {CONCURRENCY_TEXT[concurrency]}" if concurrency in CONCURRENCY_TEXT else "–",
        "next_wave_at": None if coordination.is_terminal else coordination.next_wave_at,
        "approved_at": coordination.approved_at,
        "approved_by": coordination.approver if coordination.approved_at else "",
    }
