"""The shape of an environment's tags: one copy of the rule, for the model, the config
file, the API, the admin, the deployment selection and the settings (which import this
before Django's apps load, so it imports nothing from Django)."""

import re

TAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,49}")
TAG_HINT = "a tag is 1-50 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit"
MAX_TAGS = 20
# The most labels one selection (`tags`, `exclude_tags`) may name: an environment holds at
# most MAX_TAGS, but a selection may span many environments' labels.
MAX_SELECTED_TAGS = 100


def is_tag(value: object) -> bool:
    """The whole value has the shape (fullmatch: a trailing newline does not slip through)."""
    return isinstance(value, str) and TAG.fullmatch(value) is not None


def shown(value: object) -> str:
    """A label as a message quotes it: repr (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def tags_problem(value: object) -> str | None:
    """What is wrong with `value` as an environment's tags, or None: a list of at most
    MAX_TAGS distinct labels of the TAG shape. Order is the operator's and is kept."""
    if not isinstance(value, list):
        return 'must be a list of tags, e.g. ["mac", "team-a"]'
    not_strings = [item for item in value if not isinstance(item, str)]
    if not_strings:
        return f"every tag must be a string (got {shown(not_strings[0])})"
    malformed = [item for item in value if not is_tag(item)]
    if malformed:
        return f"{shown(malformed[0])} is not a tag: {TAG_HINT}"
    if len(value) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags (got {len(value)})"
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        return f"a tag may appear once (repeated: {', '.join(repeated)})"
    return None


def split_tags(text: str) -> list[str]:
    """Comma-separated labels as typed on a command line, in a form or in an environment
    variable: each stripped, empty ones dropped. Not validated here."""
    return [item.strip() for item in text.split(",") if item.strip()]
