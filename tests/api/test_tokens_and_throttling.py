"""API tokens (create_api_token, the admin), their expiry, and per-token throttling."""

import io
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import make_user, token_client
from tests.support.processes import ROOT


def create_token(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


class TestCreateApiToken:
    def test_it_prints_a_key_that_authenticates_and_stores_only_a_hash(self, db):
        make_user("deploy-bot", "VIEWER")

        key, note = create_token("deploy-bot")

        assert re.fullmatch(r"[0-9a-f]{64}", key)
        assert "not shown again" in note and "roles VIEWER" in note
        assert client_with(key).get("/api/deployment/status").status_code == 200
        token = AuthToken.objects.get()
        assert key not in (token.digest, token.token_key) and token.token_key == key[:15]
        # The default lifetime is API_TOKEN_TTL_DAYS (365).
        assert abs(token.expiry - (timezone.now() + timedelta(days=365))) < timedelta(minutes=1)

    def test_expires_in_sets_the_expiry_and_0_means_never(self, db):
        make_user("deploy-bot", "ADMIN")
        create_token("deploy-bot", "--expires-in", "7")
        create_token("deploy-bot", "--expires-in", "0")
        expiries = sorted(AuthToken.objects.values_list("expiry", flat=True), key=lambda e: e is None)
        assert abs(expiries[0] - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
        assert expiries[1] is None

    def test_role_puts_the_user_in_the_group(self, db):
        user = make_user("deploy-bot")
        key, _ = create_token("deploy-bot", "--role", "ADMIN")
        assert user.groups.filter(name="ADMIN").exists()
        assert client_with(key).post("/api/deployment/trigger-local", {}, format="json").status_code == 400

    def test_an_unknown_user_or_a_bad_expiry_is_an_error(self, db):
        with pytest.raises(CommandError, match="username: no user 'ghost'"):
            create_token("ghost")
        make_user("deploy-bot")
        with pytest.raises(CommandError, match="--expires-in"):
            create_token("deploy-bot", "--expires-in", "-1")

    def test_an_expiry_beyond_ten_years_is_refused_before_anything_is_written(self, db):
        user = make_user("deploy-bot")
        with pytest.raises(CommandError, match="--expires-in.*at most 3650"):
            create_token("deploy-bot", "--role", "ADMIN", "--expires-in", str(10**12))
        assert not user.groups.exists()
        assert not AuthToken.objects.filter(user=user).exists()

    def test_the_command_exits_2_on_bad_input(self, transactional_db):
        from tests.support.processes import process_environment

        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "create_api_token", "ghost"],
            cwd=ROOT,
            env=process_environment(),  # the test database, never the project's own
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "no user 'ghost'" in result.stderr


def test_a_token_made_in_the_admin_is_shown_once_and_authenticates(db, client):
    Group.objects.get_or_create(name="VIEWER")
    owner = make_user("script-owner", "VIEWER")
    client.force_login(make_user("root", is_superuser=True, is_staff=True))

    response = client.post(
        "/admin/knox/authtoken/add/", {"user": owner.pk, "expiry_0": "2099-01-01", "expiry_1": "00:00:00"}, follow=True
    )

    messages = [str(message) for message in response.context["messages"]]
    (key,) = [message.removeprefix("TOKEN ") for message in messages if message.startswith("TOKEN ")]
    assert client_with(key).get("/api/deployment/history").status_code == 200
    assert key not in client.get("/admin/knox/authtoken/").content.decode()


class TestThrottling:
    @pytest.fixture
    def tight_limits(self, settings):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"token": "3/minute", "anon": "2/minute"},
        }

    def test_over_the_limit_a_token_gets_429_with_retry_after(self, db, tight_limits):
        client = token_client(make_user("busy", "VIEWER"))
        codes = [client.get("/api/deployment/history").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        response = client.get("/api/deployment/history")
        assert 0 < int(response["Retry-After"]) <= 60
        assert "throttled" in response.json()["detail"].lower()

    def test_each_token_has_its_own_budget(self, db, tight_limits):
        user = make_user("busy", "VIEWER")
        first, second = token_client(user), token_client(user)
        for _ in range(3):
            first.get("/api/deployment/history")
        assert first.get("/api/deployment/history").status_code == 429
        assert second.get("/api/deployment/history").status_code == 200

    def test_the_schema_is_throttled_per_address_for_anonymous_clients(self, db, tight_limits):
        client = APIClient()
        assert [client.get("/api/schema/").status_code for _ in range(3)] == [200, 200, 429]

    def test_a_forged_x_forwarded_for_does_not_buy_an_anonymous_client_a_new_budget(self, db, tight_limits):
        client = APIClient()
        codes = [
            client.get("/api/schema/", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code for n in range(3)
        ]
        assert codes == [200, 200, 429]  # no proxy is trusted unless API_NUM_PROXIES says so

    def test_the_health_endpoint_is_never_throttled(self, db, tight_limits):
        assert {APIClient().get("/api/health").status_code for _ in range(5)} == {503}

    def test_the_counts_live_in_a_cache_every_process_shares(self, settings):
        import os

        shared = (
            "django.core.cache.backends.redis.RedisCache"
            if os.environ.get("REDIS_URL")
            else "django.core.cache.backends.db.DatabaseCache"
        )
        assert settings.CACHES["default"]["BACKEND"] == shared


CHECK = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"


def start_with(**variables) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "powerautomation.settings", "DJANGO_SECRET_KEY": "test-key", **variables})
    return subprocess.run([sys.executable, "-c", CHECK], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("API_THROTTLE_RATE", "lots"),
        ("API_ANON_THROTTLE_RATE", "10/fortnight"),
        ("API_TOKEN_TTL_DAYS", "-1"),
        ("API_THROTTLE_RATE", "9" * 5000 + "/minute"),  # a number Python refuses to read
    ],
)
def test_a_bad_api_setting_stops_start_up_naming_it(variable, value):
    result = start_with(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr


def test_redis_url_switches_the_cache_to_redis():
    result = start_with(REDIS_URL="redis://127.0.0.1:6390/0")
    assert result.stdout.strip() == "django.core.cache.backends.redis.RedisCache", result.stderr
