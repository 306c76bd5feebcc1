"""JSON from outside, read one way everywhere: the API's request bodies, the config file
(`import_environments`, the admin's import). Python's own parser recurses once per level
(`'[' * 100000` is a RecursionError, not an error about the input), keeps the last of two
equal keys without a word (a second `"environments"` would silently replace the first),
and accepts `NaN`. This one refuses all three with a message saying what is wrong.
"""

import json
import math
from typing import Any

# Deeper than any shape the platform reads (the config file is 4 levels deep).
MAX_DEPTH = 64

# The brackets the depth scan counts (outside strings).
_OPENERS = "[{"
_CLOSERS = "]}"


class JSONInputError(ValueError):
    """The input is not JSON the platform accepts; the message says why."""


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` (UTF-8 bytes or text) as strict JSON: at most `max_depth` levels of
    arrays and objects, each key once per object, no NaN or Infinity."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(f"not UTF-8 text (byte {exc.start} is not UTF-8)") from None
    if _deeper_than(raw, max_depth):
        raise JSONInputError(f"nested deeper than {max_depth} levels of arrays and objects")
    duplicates: list[str] = []
    try:
        data = json.loads(
            raw,
            object_pairs_hook=_object_noting(duplicates),
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"not valid JSON: {exc}") from None
    except RecursionError:  # only if the scan above was wrong about the depth
        raise JSONInputError(f"nested deeper than {max_depth} levels of arrays and objects") from None
    except ValueError as exc:  # NaN, Infinity, 1e400, a number of more than 4300 digits
        raise JSONInputError(f"not valid JSON: {exc}") from None
    if duplicates:
        names = ", ".join(repr(name) for name in dict.fromkeys(duplicates))
        raise JSONInputError(f"duplicate key {names}: each key may appear only once in an object")
    return data


def _deeper_than(text: str, limit: int) -> bool:
    """Whether `text` nests arrays and objects more than `limit` deep, brackets inside
    strings not counted. One pass, left to right, stopping as soon as the limit is passed:
    linear in the length of the text whatever it holds (no regular expression that can
    backtrack over escapes)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif char in _CLOSERS:
            depth -= 1
    return False


def _object_noting(duplicates: list[str]):
    def build(pairs: list[tuple[str, Any]]) -> dict:
        result: dict = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    return build


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent; `1e400` would be infinity, which JSON
    cannot spell and the platform refuses like `Infinity`."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number (it would be infinite)")
    return value
