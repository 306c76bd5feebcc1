"""The bounds of every number that becomes a time, a count or a size: one copy of each,
for the model's validators, the config file's settings blocks, the runner's clamps and
the settings (which import this before Django's apps load, so it imports nothing from
Django).

A value outside its bound is refused at every entry point with a message naming the
limit; a value that got stored anyway is clamped where it becomes a time, so it cannot
fail a whole coordination (timedelta and Event.wait overflow on huge numbers).
"""

import math
from dataclasses import dataclass
from typing import Any

DAY_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class Bound:
    """Allowed values: whole numbers (or any finite number) from `minimum` to `maximum`;
    with `above_minimum`, greater than `minimum` instead."""

    minimum: float
    maximum: float
    unit: str = ""
    integer: bool = True
    above_minimum: bool = False

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        kind = "a whole number" if self.integer else "a number"
        low = f"greater than {self.minimum:g}" if self.above_minimum else f"from {self.minimum:g}"
        return f"{kind} {low} to {self.maximum:g}{unit}"

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused (a message naming the limits), or None."""
        wanted = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            return f"must be {self.describe()}"
        if isinstance(value, float) and not math.isfinite(value):  # an int of any size compares exactly
            return f"must be {self.describe()}"
        too_low = value <= self.minimum if self.above_minimum else value < self.minimum
        if too_low or value > self.maximum:
            return f"must be {self.describe()}"
        return None

    def clamp(self, value: float, fallback: float | None = None) -> float:
        """`value` brought inside the bound: NaN (or no number at all) becomes `fallback`
        (a setting's default) or, without one, the maximum; a value at or below an
        exclusive minimum becomes 1 (a wait of 0 is refused by the libraries that wait)."""
        not_a_number = not isinstance(value, (int, float)) or isinstance(value, bool)
        if not_a_number or (isinstance(value, float) and math.isnan(value)):
            return self.maximum if fallback is None else self.clamp(fallback)
        if self.above_minimum and value <= self.minimum:
            return min(1, self.maximum)
        return min(max(value, self.minimum), self.maximum)

    def clamp_int(self, value: int, fallback: int | None = None) -> int:
        return int(self.clamp(value, fallback))


# An environment's run, and default_settings.timeout: a week is longer than any init script.
TIMEOUT = Bound(1, 7 * DAY_SECONDS, "seconds (7 days)")
PORT = Bound(1, 65535)
# default_settings: connection retries before a script started, and the first wait between them.
RETRY_COUNT = Bound(0, 100)
RETRY_DELAY = Bound(0, 3600, "seconds", integer=False)
HEALTH_CHECK_TIMEOUT = Bound(0, 300, "seconds", integer=False, above_minimum=True)
HEALTH_CHECK_RETRIES = Bound(0, 100)
# ssh_settings.connection_timeout and SSH_CONNECT_TIMEOUT.
CONNECT_TIMEOUT = Bound(0, 300, "seconds", integer=False, above_minimum=True)
# deployment_settings.parallel_limit and DEPLOYMENT_PARALLEL_LIMIT: threads in one task.
PARALLEL_LIMIT = Bound(1, 10_000)
# trigger_local --wait --timeout: how long the command follows a run.
FOLLOW_TIMEOUT = Bound(0, 7 * DAY_SECONDS, "seconds (7 days)", integer=False, above_minimum=True)
# A polling environment's poll_interval: how often its agent asks for work.
POLL_INTERVAL = Bound(1, 300, "seconds")
# default_settings.health_check_interval (the original format's global_settings.health_check_interval).
HEALTH_CHECK_INTERVAL = Bound(1, DAY_SECONDS, "seconds")
