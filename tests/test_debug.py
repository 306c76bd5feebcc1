"""Django's debug error page (DJANGO_DEBUG=true) shows no credentials."""

import sys

import pytest
from django.core import checks
from django.test import RequestFactory
from django.views.debug import technical_500_response

WEBHOOK_URL = "https://hooks.chat.example/services/T0001/B0002/webhook-path-credential"
REDIS_URL = "redis://:redis-password-4711@127.0.0.1:6379/0"
DATABASE_URL = "postgres://app:db-password-0815@127.0.0.1/app"


@pytest.fixture
def debug_with_credentials(settings):
    settings.DEBUG = True
    settings.NOTIFICATION_WEBHOOK_URL = WEBHOOK_URL
    settings.REDIS_URL = REDIS_URL
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": REDIS_URL}
    settings.CACHES = {
        **settings.CACHES,
        "spare": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
    }


def error_page() -> str:
    request = RequestFactory().get("/admin/", HTTP_X_UPSTREAM=DATABASE_URL)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()


def test_the_debug_error_page_hides_the_notification_webhook_url(debug_with_credentials):
    page = error_page()

    assert "boom" in page
    assert "webhook-path-credential" not in page


def test_the_debug_error_page_hides_the_redis_password_wherever_it_is_set(debug_with_credentials):
    assert "redis-password-4711" not in error_page()


def test_the_debug_error_page_hides_a_url_with_credentials_in_a_request_header(debug_with_credentials):
    assert "db-password-0815" not in error_page()


def test_debug_on_is_a_system_check_warning(settings):
    settings.DEBUG = True

    warnings = [message.id for message in checks.run_checks(tags=[checks.Tags.security])]

    assert "powerautomation.W001" in warnings


def test_debug_off_passes_the_system_check(settings):
    settings.DEBUG = False

    assert "powerautomation.W001" not in [message.id for message in checks.run_checks(tags=[checks.Tags.security])]


def test_the_web_process_says_in_its_log_at_start_that_debug_is_on(tmp_path):
    """gunicorn runs no system checks: the WSGI entry point warns instead."""
    import os
    import subprocess
    import sys

    from tests.support.processes import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="powerautomation.settings", DJANGO_DEBUG="true", DJANGO_SECRET_KEY="test-key")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "-c", "import powerautomation.wsgi"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "powerautomation.W001" in result.stderr


@pytest.mark.parametrize(
    "url", ["redis://:pw-4711@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0?password=pw-4711", "rediss://u:pw-4711@h/0"]
)
def test_a_url_with_a_password_in_any_form_is_hidden_on_the_error_page(url):
    from powerautomation.debug import ExceptionReporterFilter

    shown = ExceptionReporterFilter().cleanse_setting("LOCATION", url)

    assert "pw-4711" not in str(shown)
