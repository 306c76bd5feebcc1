"""Agent tokens: how a polling agent proves which environment it is.

The platform keeps only a token's SHA-256. A token is a random secret of at least 32
characters (a generated one has 256 bits), so a plain hash is enough: nobody can guess
what hashes to a stored value, and a leaked database does not give the agents' tokens away.
"""

import hashlib
import hmac
import secrets

PREFIX = "pa_agent_"
MIN_CHARS = 32
MAX_CHARS = 200


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hashes_match(stored: str, token: str) -> bool:
    return bool(stored) and hmac.compare_digest(stored, token_hash(token))


def token_problem(value: object) -> str | None:
    """Why `value` cannot be an agent token (never quoting it), or None. `""` clears one."""
    if not isinstance(value, str):
        return "must be a string"
    if value == "":
        return None
    if not MIN_CHARS <= len(value) <= MAX_CHARS:
        return f"must be {MIN_CHARS} to {MAX_CHARS} characters long (generate one: a random token)"
    if any(not ("!" <= ch <= "~") for ch in value):
        return "may hold only visible ASCII characters (no spaces or line breaks)"
    return None
