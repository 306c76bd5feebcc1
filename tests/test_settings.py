"""Settings come from environment variables; a bad value stops start-up with a message
naming the variable."""

import os
import re
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, manage, start_with, wait_until


def test_defaults_start():
    result = start_with()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "7200"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG must be true or false"),
        ("Q_WORKERS", "many", "Q_WORKERS must be an integer"),
        ("Q_WORKERS", "0", "Q_WORKERS must be at least 1"),
        ("DEPLOYMENT_PARALLEL_LIMIT", "-3", "DEPLOYMENT_PARALLEL_LIMIT must be at least 1"),
        ("SSH_CONNECT_TIMEOUT", "soon", "SSH_CONNECT_TIMEOUT must be an integer"),
        ("DATABASE_URL", "nonsense://x", "DATABASE_URL"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL must start with redis://"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(variable, value, message):
    result = start_with(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("variable", "limit"),
    [
        ("API_TOKEN_TTL_DAYS", 3650),
        ("SSH_CONNECT_TIMEOUT", 300),
        ("DEPLOYMENT_PARALLEL_LIMIT", 10000),
        ("DEPLOYMENT_LEASE_SECONDS", 3600),
        ("HEALTH_CHECK_INTERVAL_MINUTES", 1440),
        ("HISTORY_RETENTION_DAYS", 36500),
        ("NOTIFICATION_RETRY_DELAY_SECONDS", 3600),
        ("Q_TIMEOUT", 2592000),
    ],
)
def test_a_huge_value_fails_naming_the_variable_and_its_limit(variable, limit):
    result = start_with(**{variable: "1000000000000"})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{variable} must be at most {limit}, not 1000000000000" in result.stderr


def test_retry_must_exceed_the_task_timeout():
    result = start_with(Q_TIMEOUT="600", Q_RETRY="600")
    assert result.returncode != 0
    assert "Q_RETRY (600) must be greater than Q_TIMEOUT (600)" in result.stderr


def test_redis_url_switches_the_broker():
    code = "import django; django.setup(); from django.conf import settings; print(settings.Q_CLUSTER.get('redis'))"
    import os

    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="powerautomation.settings",
        DJANGO_SECRET_KEY="k",
        REDIS_URL="redis://127.0.0.1:6390/0",
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "redis://127.0.0.1:6390/0"


# --- The generated secret key file -------------------------------------------------------

WRITE_KEY = """
import os, sys, time
from pathlib import Path
ready, go, path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
from powerautomation.settings import local_secret_key
ready.touch()
while not go.exists():
    time.sleep(0.001)
print(local_secret_key(path))
"""


def test_the_generated_secret_key_file_is_private_even_under_an_open_umask(tmp_path):
    import os

    from powerautomation.settings import local_secret_key

    path = tmp_path / ".secret_key"
    previous = os.umask(0)
    try:
        key = local_secret_key(path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == key


def test_an_existing_secret_key_file_is_read_not_replaced(tmp_path):
    from powerautomation.settings import local_secret_key

    path = tmp_path / ".secret_key"
    path.write_text("kept-key\n")
    assert local_secret_key(path) == "kept-key"
    assert path.read_text() == "kept-key\n"


def test_processes_starting_at_once_on_a_fresh_machine_all_get_the_same_secret_key(tmp_path):
    import os

    env = dict(os.environ, DJANGO_SECRET_KEY="only-for-the-import")
    path, go = tmp_path / ".secret_key", tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITE_KEY, str(tmp_path / f"ready-{n}"), str(go), str(path)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    wait_until(lambda: all((tmp_path / f"ready-{n}").exists() for n in range(8)), 60, "every process to be ready")
    go.touch()
    keys = set()
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        keys.add(out.strip())
    assert keys == {path.read_text()}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ready-")) == [".secret_key", "go"]


def test_static_root_comes_from_its_variable(tmp_path):
    import os

    code = "import django; django.setup(); from django.conf import settings; print(settings.STATIC_ROOT)"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="powerautomation.settings", DJANGO_SECRET_KEY="k")
    env["STATIC_ROOT"] = str(tmp_path / "static")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == str(tmp_path / "static"), result.stderr


def test_the_secret_key_file_is_made_private_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    """Some bind and network mounts refuse link(2): the key is then created with O_EXCL."""
    import os
    import stat

    from powerautomation.settings import local_secret_key

    def no_hard_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    path = tmp_path / ".secret_key"

    key = local_secret_key(path)

    assert len(key) > 40
    assert path.read_text() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_secret_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == [".secret_key"]  # no temporary file left


# --- Production settings (README "Running on several machines") --------------------------

# Documented values that cannot be used as they stand: placeholders, and hosts that are not
# loopback (tests talk only to 127.0.0.1).
LOCAL_STAND_INS = {
    "DATABASE_URL": "postgres://powerautomation:SECRET@127.0.0.1:5432/powerautomation",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DJANGO_SECRET_KEY": "kV3q9-Zt7yXw2LpN8sRb4HmCfD6gJ0aE1uTiOo5WnYzQxKlMvBc",
    "FIELD_ENCRYPTION_KEY": "Jl2aC8yqW0mXh8CcV4-3v7Qm6x7g2u4pC7eXf6wq9Zs=",
}


def documented_production_settings() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Running on several machines\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^export ([A-Z0-9_]+)=(\S*)", section, flags=re.MULTILINE))


def check_deploy(variables: dict[str, str]) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **variables}  # noqa: S108
    return manage(["check", "--deploy", "--fail-level", "WARNING"], env)


def test_check_deploy_is_clean_with_exactly_the_documented_production_settings():
    documented = documented_production_settings()
    assert set(LOCAL_STAND_INS) <= set(documented)

    result = check_deploy({**documented, **LOCAL_STAND_INS})

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_without_the_https_settings():
    documented = {**documented_production_settings(), **LOCAL_STAND_INS}
    without_https = {name: value for name, value in documented.items() if not name.startswith("DJANGO_SECURE")}

    result = check_deploy(without_https)

    assert result.returncode != 0
    assert "security.W008" in result.stderr
