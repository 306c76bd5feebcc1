"""What a coordination's `ec2_deployment_config` may say, and which mode it selects.

`{}` ("reported"): the deploy script passed the instance id and public IP; they are
recorded as given. `{"instance_id": ...}` ("wait"): wait until that instance runs and
passes its status checks. `{"image_id", "instance_type", ...}` ("launch"): launch one
first. `platform_health_url`, in any mode, then waits until the platform answers 2xx.
"""

from collections.abc import Callable
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from deployments.patterns import (
    IMAGE_ID,
    INSTANCE_ID,
    INSTANCE_ID_HINT,
    INSTANCE_TYPE,
    SECURITY_GROUP_ID,
    SUBNET_ID,
    matches,
)

REPORTED, WAIT, LAUNCH = "reported", "wait", "launch"
USER_DATA_MAX_BYTES = 16 * 1024  # AWS's limit, before base64
MAX_TAGS = 40  # AWS allows 50 per resource; we add our own
TAG_COORDINATION = "powerautomation:coordination"
# The keys that only make sense when launching.
LAUNCH_KEYS = ("instance_type", "key_name", "security_group_ids", "subnet_id", "user_data", "tags")


def _text(value, *, pattern=None, hint: str = "", max_length: int = 255) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if pattern is not None and not matches(pattern, value):
        return hint
    return None


def _security_groups(value) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of security group ids"
    for item in value:
        if not isinstance(item, str) or not matches(SECURITY_GROUP_ID, item):
            return f"{item!r} is not a security group id (sg-0123456789abcdef0)"
    return None


def _user_data(value) -> str | None:
    if not isinstance(value, str):
        return "must be a string (the script or cloud-init config, not base64)"
    if len(value.encode("utf-8")) > USER_DATA_MAX_BYTES:
        return f"must be at most {USER_DATA_MAX_BYTES} bytes"
    return None


def _tags(value) -> str | None:
    if not isinstance(value, dict):
        return 'must be an object of tag names to values, e.g. {"Name": "platform"}'
    if len(value) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags"
    for key, item in value.items():
        if not key or len(key) > 128 or key.lower().startswith("aws:"):
            return f"tag name {key!r} must be 1-128 characters and not start with aws:"
        if key == TAG_COORDINATION:
            return f"tag {TAG_COORDINATION} is set by the platform"
        if not isinstance(item, str) or len(item) > 256:
            return f"tag {key!r} must have a string value of at most 256 characters"
    return None


def _http_url(value) -> str | None:
    if not isinstance(value, str) or len(value) > 2000:
        return "must be a URL of at most 2000 characters"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    return None


CHECKS: dict[str, Callable] = {
    "instance_id": lambda v: _text(v, pattern=INSTANCE_ID, hint=INSTANCE_ID_HINT),
    "image_id": lambda v: _text(v, pattern=IMAGE_ID, hint="an AMI id looks like ami-0123456789abcdef0"),
    "instance_type": lambda v: _text(v, pattern=INSTANCE_TYPE, hint="an instance type looks like t3.micro"),
    "key_name": _text,
    "security_group_ids": _security_groups,
    "subnet_id": lambda v: _text(v, pattern=SUBNET_ID, hint="a subnet id looks like subnet-0123456789abcdef0"),
    "user_data": _user_data,
    "tags": _tags,
    "platform_health_url": _http_url,
}


def validate_ec2_config(config: dict, *, ec2_instance_id: str = "") -> None:
    """Raise ValidationError naming `ec2_deployment_config.<key>` for every problem."""
    errors: dict[str, list[str]] = {}

    def problem(key: str, message: str) -> None:
        errors.setdefault(f"ec2_deployment_config.{key}", []).append(message)

    for key, value in config.items():
        check = CHECKS.get(key)
        if check is None:
            problem(key, f"unknown key; known keys: {', '.join(CHECKS)}")
            continue
        message = check(value)
        if message:
            problem(key, message)
    if "instance_id" in config and "image_id" in config:
        problem("instance_id", "give instance_id (wait for that instance) or image_id (launch one), not both")
    if "image_id" in config and "instance_type" not in config:
        problem("instance_type", "required with image_id")
    if "image_id" not in config:
        for key in LAUNCH_KEYS:
            if key in config:
                problem(key, "only used when launching an instance (with image_id)")
    wanted = config.get("instance_id")
    if isinstance(wanted, str) and ec2_instance_id and wanted != ec2_instance_id:
        problem("instance_id", f"differs from ec2_instance_id {ec2_instance_id!r}; give one of them")
    if errors:
        raise ValidationError(errors)


def ec2_mode(config: dict | None) -> str:
    config = config or {}
    if "image_id" in config:
        return LAUNCH
    if "instance_id" in config:
        return WAIT
    return REPORTED
