"""Settings come from environment variables; a bad value stops start-up with a message
naming the variable."""

import subprocess
import sys

import pytest

from tests.support.processes import ROOT, start_with


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
