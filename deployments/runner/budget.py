"""The failure budget (`max_failures`, resolved when the coordination was created): once
more targets have failed than it allows, no further target starts. Counted in the
database, so every task of the coordination, and one that takes over after a crash,
sees the same count."""

from deployments.models import Coordination, TargetStatus as T
from deployments.selectors import PROGRESS_BUCKETS
from deployments.transitions import cancel_not_started

# What counts as a failure: the progress table's "failed" (failed, interrupted).
FAILURE_STATUSES = PROGRESS_BUCKETS["failed"]
FAILURE_BUDGET = "failure_budget"


class FailureBudget:
    def __init__(self, coordination: Coordination):
        self.coordination = coordination
        allowed = (coordination.rollout or {}).get("failure_budget")
        self.allowed: int | None = allowed if isinstance(allowed, int) and not isinstance(allowed, bool) else None
        self.failures = 0

    def spent(self) -> bool:
        """More targets have failed than the budget allows (one query; none without a budget)."""
        if self.allowed is None:
            return False
        self.failures = self.coordination.targets.filter(status__in=FAILURE_STATUSES).count()
        return self.failures > self.allowed

    def stop_the_rest(self) -> int:
        """Cancel every target not started yet, in every wave (`failure_budget`)."""
        return cancel_not_started(
            self.coordination.targets.filter(status=T.PENDING),
            reason=f"the failure budget is spent: {self.failures} environment{'s' if self.failures != 1 else ''} "
            f"failed, at most {self.allowed} may",
            code=FAILURE_BUDGET,
            data={"failed": self.failures, "max_failures": self.allowed},
        )
