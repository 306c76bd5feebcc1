"""The rollout policy: how a deployment walks the fleet (waves, a failure budget, a pause
or an approval after the canary wave, what to do with a busy environment).

Defaults come from the config file's `deployment_settings`; a deployment may override
any key (trigger_local flags, the API's `rollout`, the admin's Deploy form). The policy
is resolved against the deployment's number of targets once, when it is created, and
stored on the coordination: percentages never change under a running rollout.

Semantics are the ones our users know:
- `batch_size` is Ansible's `serial`: each element is the size of the next wave (a
  number, or a percentage of all targets, rounded down but at least 1); the last element
  repeats. Unset: one wave of every target.
- `max_failures` is SSM's `MaxErrors`: once MORE than this many targets have failed, no
  further target starts. Unset: no budget.
- `pause_after_first_batch`: after the first wave, wait for an ADMIN's approval
  (`"approval"`) or a number of seconds. `batch_pause_seconds`: the pause between later waves.
- `concurrency`: a target whose environment is in another running coordination waits
  for it (`queue`), refuses the whole deployment (`reject`), or cancels the older run on
  it (`supersede`).

Pure Python: the config file's validation (environments) and the deployments below it
both use it.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

KEYS = ("batch_size", "max_failures", "pause_after_first_batch", "batch_pause_seconds", "concurrency")
APPROVAL = "approval"
QUEUE, REJECT, SUPERSEDE = "queue", "reject", "supersede"
CONCURRENCY = (QUEUE, REJECT, SUPERSEDE)
# Bounds: a wave list longer than this is a typo, a pause longer than a day is a plan.
MAX_WAVE_ELEMENTS = 20
MAX_COUNT = 100_000
MAX_PAUSE_SECONDS = 24 * 60 * 60
SHOWN_CHARS = 40
_PERCENT = re.compile(r"\A([0-9]{1,3})%\Z")

Size = int | str  # a count, or "N%"


def _shown(value: Any) -> str:
    """A refused value as an error message quotes it: its start only (a 2 MB string sent as
    a wave size is not echoed back whole)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text)} characters)"


def _percent(value: Any) -> int | None:
    match = _PERCENT.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def _count_problem(value: Any, *, minimum: int) -> str | None:
    percent = _percent(value)
    if percent is not None:
        if percent < max(minimum, 0) or percent > 100:
            return f"a percentage must be from {minimum}% to 100%, not {_shown(value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f'must be a whole number or a percentage such as "25%", not {_shown(value)}'
    if value < minimum or value > MAX_COUNT:
        return f"must be from {minimum} to {MAX_COUNT}, not {_shown(value)}"
    return None


def _seconds_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PAUSE_SECONDS:
        return f"must be a whole number of seconds from 0 to {MAX_PAUSE_SECONDS} (a day), not {_shown(value)}"
    return None


def problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be the rollout setting `key` (None: it can). `None` always can:
    it means unset."""
    if value is None:
        return None
    if key == "batch_size":
        elements = value if isinstance(value, list) else [value]
        if not elements or len(elements) > MAX_WAVE_ELEMENTS:
            return f"a list of wave sizes must have 1 to {MAX_WAVE_ELEMENTS} elements"
        for index, element in enumerate(elements):
            found = _count_problem(element, minimum=1)
            if found:
                return f"element {index + 1}: {found}" if isinstance(value, list) else found
        return None
    if key == "max_failures":
        return _count_problem(value, minimum=0)
    if key == "pause_after_first_batch":
        if value == APPROVAL or _seconds_problem(value) is None:
            return None
        return f'must be "{APPROVAL}" or a whole number of seconds from 0 to {MAX_PAUSE_SECONDS}, not {_shown(value)}'
    if key == "batch_pause_seconds":
        return _seconds_problem(value)
    if key == "concurrency":
        return None if value in CONCURRENCY else f"must be one of {', '.join(CONCURRENCY)}, not {_shown(value)}"
    return f"unknown rollout setting; known: {', '.join(KEYS)}"


@dataclass(frozen=True)
class Rollout:
    """A rollout policy before it is resolved against a number of targets."""

    batch_size: tuple[Size, ...] = ()
    max_failures: Size | None = None
    pause_after_first_batch: str | int | None = None
    batch_pause_seconds: int = 0
    concurrency: str = QUEUE

    @classmethod
    def from_json(cls, data: Any, *, base: "Rollout | None" = None, prefix: str = "rollout") -> "Rollout":
        """`data` (a JSON object of rollout settings) over `base`. Raises ValidationError
        naming `<prefix>.<key>` for every bad key, so nothing is stored."""
        base = base or cls()
        if data is None:
            return base
        if not isinstance(data, dict):
            raise ValidationError({prefix: ["must be a JSON object of rollout settings"]})
        errors = {f"{prefix}.{key}": [found] for key, value in data.items() if (found := problem(key, value))}
        if errors:
            raise ValidationError(errors)
        values = {**base.as_json(), **data}
        batch = values["batch_size"]
        return cls(
            batch_size=tuple(batch if isinstance(batch, list) else [batch] if batch is not None else []),
            max_failures=values["max_failures"],
            pause_after_first_batch=values["pause_after_first_batch"] or None,
            batch_pause_seconds=values["batch_pause_seconds"] or 0,
            concurrency=values["concurrency"] or QUEUE,
        )

    @classmethod
    def from_settings(cls, block: dict) -> "Rollout":
        """The defaults in a (validated) deployment_settings block; a stored value that
        escaped validation falls back to the built-in default instead of failing a run."""
        known = {key: block[key] for key in KEYS if key in block and problem(key, block[key]) is None}
        return cls.from_json(known, base=cls())

    def as_json(self) -> dict:
        return {
            "batch_size": list(self.batch_size) or None,
            "max_failures": self.max_failures,
            "pause_after_first_batch": self.pause_after_first_batch,
            "batch_pause_seconds": self.batch_pause_seconds,
            "concurrency": self.concurrency,
        }

    def wave_sizes(self, total: int) -> list[int]:
        """How many targets each wave takes, in order (sums to `total`)."""
        if total <= 0:
            return []
        if not self.batch_size:
            return [total]
        sizes: list[int] = []
        remaining = total
        while remaining > 0:
            size = _resolve(self.batch_size[min(len(sizes), len(self.batch_size) - 1)], total)
            size = min(max(1, size), remaining)
            sizes.append(size)
            remaining -= size
        return sizes

    def failure_budget(self, total: int) -> int | None:
        """How many targets may fail before no further one starts (None: no budget)."""
        return None if self.max_failures is None else _resolve(self.max_failures, total)

    def resolved(self, total: int) -> dict:
        """What a coordination stores of its rollout: the policy as given, and its waves
        and failure budget for this many targets (percentages resolved once, here)."""
        return {**self.as_json(), "waves": self.wave_sizes(total), "failure_budget": self.failure_budget(total)}


def _resolve(size: Size, total: int) -> int:
    percent = _percent(size)
    if percent is None:
        return int(size)
    return math.floor(total * percent / 100)


def parse_flag(key: str, text: str) -> Any:
    """A command-line value (`1,25%,100%`, `approval`, `30`) as the JSON value of `key`;
    validation is `problem`'s."""
    text = text.strip()
    if key == "concurrency" or (key == "pause_after_first_batch" and text == APPROVAL):
        return text
    items = [item.strip() for item in text.split(",")] if key == "batch_size" else [text]
    values: list[Any] = [int(item) if re.fullmatch(r"-?[0-9]{1,9}", item) else item for item in items]
    return values if key == "batch_size" and len(values) > 1 else values[0]
