"""Where the platform is and the token to use: flags first, then the environment
(POWERAUTOMATION_URL, POWERAUTOMATION_TOKEN or POWERAUTOMATION_TOKEN_FILE,
POWERAUTOMATION_CA_BUNDLE). The token never appears in a repr, a message or a log."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from powerautomation_client.errors import ConfigurationError

TOKEN_FILE_MAX_BYTES = 4096


@dataclass(frozen=True)
class Config:
    url: str  # the platform's address, e.g. https://coordinator.example.com (no /api)
    token: str = field(repr=False)
    # True: verify TLS against the system's CAs; a path: against that CA bundle.
    verify: bool | str = True


def _read_token_file(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(TOKEN_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"--token-file: cannot read {path!r} ({exc.strerror or exc})") from None
    if len(data) > TOKEN_FILE_MAX_BYTES:
        raise ConfigurationError(f"--token-file: {path!r} is over {TOKEN_FILE_MAX_BYTES} bytes: not a token")
    try:
        lines = data.decode("utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise ConfigurationError(f"--token-file: {path!r} is not text") from None
    if not lines:
        raise ConfigurationError(f"--token-file: {path!r} is empty")
    return lines[0].strip()


def _base_url(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Quoted in part only: a URL may carry credentials someone pasted.
        raise ConfigurationError(f"{source}: must be an http:// or https:// URL of the platform, not {url[:40]!r}")
    if parts.username or parts.password:
        raise ConfigurationError(f"{source}: put no credentials in the URL; the token goes in POWERAUTOMATION_TOKEN")
    return url[: -len("/api")] if url.endswith("/api") else url


def _check_token(token: str, source: str) -> str:
    if not token:
        raise ConfigurationError(f"{source}: the token is empty")
    if not token.isprintable() or " " in token:
        raise ConfigurationError(f"{source}: the token has spaces or control characters: not a token")
    return token


def load_config(
    *,
    url: str | None = None,
    token: str | None = None,
    token_file: str | None = None,
    ca_bundle: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The configuration from these arguments, each falling back to its environment
    variable; ConfigurationError naming what is missing or wrong."""
    env = os.environ if environ is None else environ
    if url is None:
        url = env.get("POWERAUTOMATION_URL", "")
        url_source = "POWERAUTOMATION_URL"
    else:
        url_source = "--url"
    if not url.strip():
        raise ConfigurationError("POWERAUTOMATION_URL (or --url): where the platform is, e.g. https://coordinator:8000")
    base_url = _base_url(url, url_source)
    if token is not None:
        token = _check_token(token.strip(), "token")
    elif token_file is not None:
        token = _check_token(_read_token_file(token_file), "--token-file")
    elif env.get("POWERAUTOMATION_TOKEN", "").strip():
        token = _check_token(env["POWERAUTOMATION_TOKEN"].strip(), "POWERAUTOMATION_TOKEN")
    elif env.get("POWERAUTOMATION_TOKEN_FILE", "").strip():
        token = _check_token(_read_token_file(env["POWERAUTOMATION_TOKEN_FILE"]), "POWERAUTOMATION_TOKEN_FILE")
    else:
        raise ConfigurationError(
            "POWERAUTOMATION_TOKEN (or --token-file): an API token (manage.py create_api_token on the platform)"
        )
    verify: bool | str = True
    ca_bundle = env.get("POWERAUTOMATION_CA_BUNDLE", "") if ca_bundle is None else ca_bundle
    if ca_bundle:
        if not os.path.isfile(ca_bundle):
            raise ConfigurationError(f"POWERAUTOMATION_CA_BUNDLE: no file {ca_bundle!r}")
        verify = ca_bundle
    return Config(url=base_url, token=token, verify=verify)
