"""What only ADMINs see of a coordination's record, and how everyone else sees it.

An agent's answer body (`response_excerpt`, on a target and in its events' data) could be
anything the endpoint returns, and EC2 `user_data` often carries passwords: VIEWERs, the
commands' JSON and the notifications get them masked; an ADMIN's request gets them whole.
"""

from environments.connectors.http import RESPONSE_EXCERPT

# Keys of a StageEvent's data that only ADMINs see.
ADMIN_ONLY_EVENT_DATA = (RESPONSE_EXCERPT,)
HIDDEN = "hidden (ADMINs only)"


def event_data_shown(data: dict, *, admin: bool) -> dict:
    if admin or not any(key in data for key in ADMIN_ONLY_EVENT_DATA):
        return data
    return {key: HIDDEN if key in ADMIN_ONLY_EVENT_DATA else value for key, value in data.items()}


def response_excerpt_shown(excerpt: str, *, admin: bool) -> str:
    return excerpt if admin or not excerpt else HIDDEN


def ec2_config_shown(config: dict, *, admin: bool) -> dict:
    """`user_data` as `set (N bytes)` for everyone but an ADMIN."""
    user_data = config.get("user_data") if isinstance(config, dict) else None
    if admin or not isinstance(user_data, str):
        return config
    return {**config, "user_data": f"set ({len(user_data.encode('utf-8'))} bytes)"}
