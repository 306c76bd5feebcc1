"""The shapes of identifiers a deployment is started with: one copy of each, for the
services, the API, the EC2 stage and the settings (which import this before Django's apps
load, so it imports nothing from Django)."""

import re

COORDINATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
COORDINATION_ID_HINT = "use 1-100 letters, digits, '_', '.', ':' or '-'"
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+:-]{0,99}")
VERSION_HINT = "use 1-100 letters, digits, '_', '.', '+', ':' or '-'"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
INSTANCE_ID_HINT = "an EC2 instance id looks like i-0123456789abcdef0"
IMAGE_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")
SECURITY_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}")
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")


def matches(pattern: re.Pattern[str], value: str) -> bool:
    """The whole value has the shape (a trailing newline does not slip through, as it
    would with `$`)."""
    return pattern.fullmatch(value) is not None
