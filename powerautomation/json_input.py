"""JSON from outside, read one way everywhere: the API's request bodies, the config file
(`import_environments`, the admin's import). Python's own parser recurses once per level
(`'[' * 100000` is a RecursionError, not an error about the input), keeps the last of two
equal keys without a word (a second `"environments"` would silently replace the first),
and accepts `NaN`. This one refuses all three with a message saying what is wrong.
"""

import json
import re
from typing import Any

# Deeper than any shape the platform reads (the config file is 4 levels deep).
MAX_DEPTH = 64

# A JSON string (quotes, escapes), and anything that is not a bracket: what is left of a
# document without them is its nesting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


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
        data = json.loads(raw, object_pairs_hook=_object_noting(duplicates), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"not valid JSON: {exc}") from None
    except RecursionError:  # only if the scan above was wrong about the depth
        raise JSONInputError(f"nested deeper than {max_depth} levels of arrays and objects") from None
    except ValueError as exc:  # NaN, Infinity, a number of more than 4300 digits
        raise JSONInputError(f"not valid JSON: {exc}") from None
    if duplicates:
        names = ", ".join(repr(name) for name in dict.fromkeys(duplicates))
        raise JSONInputError(f"duplicate key {names}: each key may appear only once in an object")
    return data


def _deeper_than(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
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
