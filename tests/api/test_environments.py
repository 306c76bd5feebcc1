"""environments and environments/<environment_id>/: the config file's fields and rules."""

import pytest

from environments.models import RemoteEnvironment, SettingsBlock
from tests.factories import make_environment

LIST = "/api/deployment/environments"

SSH = {
    "environment_id": "mac_local_001",
    "environment_type": "mac_local",
    "connection_method": "ssh",
    "host": "127.0.0.1",
    "port": 2222,
    "username": "alex",
    "password": "pw-for-mac",
    "init_script_path": "./init_aicore.sh",
    "working_directory": "/Users/alex/aicore0624",
    "timeout": 120,
    "description": "Alex's Mac",
}


def detail(environment_id: str) -> str:
    return f"{LIST}/{environment_id}/"


def test_create_stores_the_environment_and_answers_without_secrets(admin_client_api, db):
    response = admin_client_api.post(LIST, SSH, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["environment_id"] == "mac_local_001"
    assert (body["port"], body["timeout"], body["enabled"]) == (2222, 120, True)
    assert body["password_set"] is True
    assert (body["api_token_set"], body["webhook_secret_set"]) == (False, False)
    assert "password" not in body
    assert RemoteEnvironment.objects.get().password == "pw-for-mac"


def test_create_gives_left_out_fields_the_config_files_defaults(admin_client_api, db):
    SettingsBlock.objects.create(name="default_settings", values={"timeout": 900})
    SettingsBlock.objects.create(name="ssh_settings", values={"default_key_path": "~/.ssh/deploy_key"})
    minimal = {key: SSH[key] for key in ("environment_id", "environment_type", "connection_method", "host", "username")}

    body = admin_client_api.post(LIST, minimal, format="json").json()

    assert (body["timeout"], body["ssh_key_path"], body["port"], body["init_script_path"]) == (
        900,
        "~/.ssh/deploy_key",
        22,
        "./init_aicore.sh",
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"port": 70000}, "port"),
        ({"port": "twenty"}, "port"),
        ({"timeout": 0}, "timeout"),
        ({"environment_type": "solaris"}, "environment_type"),
        ({"connection_method": "carrier_pigeon"}, "connection_method"),
        ({"environment_id": "bad id!"}, "environment_id"),
        ({"username": ""}, "username"),
        ({"host": ""}, "host"),
        ({"password": "", "ssh_key_path": ""}, "ssh_key_path"),
        ({"health_check_url": "ftp://x"}, "health_check_url"),
        ({"working_directory": "/tmp\n; rm -rf /"}, "working_directory"),
        ({"host_key": "not a key"}, "host_key"),
    ],
)
def test_invalid_input_is_400_naming_the_field_and_stores_nothing(admin_client_api, db, change, field):
    response = admin_client_api.post(LIST, {**SSH, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not RemoteEnvironment.objects.exists()


def test_an_http_api_environment_needs_its_token(admin_client_api, db):
    body = {
        "environment_id": "docker_local_001",
        "environment_type": "docker",
        "connection_method": "http_api",
        "api_endpoint": "http://127.0.0.1:8082/api/deploy/init",
    }
    missing = admin_client_api.post(LIST, body, format="json")
    created = admin_client_api.post(LIST, {**body, "api_token": "agent-token"}, format="json")
    assert missing.status_code == 400
    assert list(missing.json()) == ["api_token"]
    assert created.status_code == 201
    assert created.json()["api_token_set"] is True


@pytest.mark.parametrize("timeout", [604801, 10**12])
def test_a_timeout_beyond_seven_days_is_400_naming_the_field_and_the_limit(admin_client_api, db, timeout):
    response = admin_client_api.post(LIST, {**SSH, "timeout": timeout}, format="json")

    assert response.status_code == 400
    assert response.json() == {"timeout": ["Enter a whole number from 1 to 604800 seconds (7 days)."]}
    assert not RemoteEnvironment.objects.exists()


def test_a_settings_change_beyond_the_bound_is_400_and_keeps_the_stored_timeout(admin_client_api, db):
    make_environment("mac_local_001", timeout=120)

    response = admin_client_api.patch(detail("mac_local_001"), {"timeout": 10**12}, format="json")

    assert response.status_code == 400
    assert "604800" in response.json()["timeout"][0]
    assert RemoteEnvironment.objects.get().timeout == 120


def test_a_duplicate_environment_id_is_400(admin_client_api, db):
    make_environment("mac_local_001")
    response = admin_client_api.post(LIST, SSH, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["environment_id"]


def test_list_filters_by_enabled_and_method(viewer_client, db):
    make_environment("env_on")
    make_environment("env_off", enabled=False)
    ids = [env["environment_id"] for env in viewer_client.get(f"{LIST}?enabled=false").json()]
    assert ids == ["env_off"]
    assert len(viewer_client.get(f"{LIST}?connection_method=ssh").json()) == 2


class TestChanges:
    @pytest.fixture
    def stored(self, admin_client_api, db):
        body = {**SSH, "ssh_key_path": "/keys/mac", "host_key": "", "enabled": False}
        assert admin_client_api.post(LIST, body, format="json").status_code == 201
        return RemoteEnvironment.objects.get()

    def test_patch_changes_only_what_it_sends_and_keeps_the_secret(self, admin_client_api, stored):
        response = admin_client_api.patch(detail("mac_local_001"), {"description": "renamed"}, format="json")
        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        assert (stored.description, stored.port, stored.password) == ("renamed", 2222, "pw-for-mac")
        assert response.json()["password_set"] is True

    def test_an_empty_secret_clears_it(self, admin_client_api, stored):
        response = admin_client_api.patch(detail("mac_local_001"), {"password": ""}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["password_set"] is False
        stored.refresh_from_db()
        assert stored.password == ""

    def test_patch_runs_the_cross_field_rules_on_the_result(self, admin_client_api, stored):
        response = admin_client_api.patch(detail("mac_local_001"), {"password": "", "ssh_key_path": ""}, format="json")
        assert response.status_code == 400
        assert list(response.json()) == ["ssh_key_path"]
        stored.refresh_from_db()
        assert stored.password == "pw-for-mac"

    def test_put_replaces_like_an_imported_entry(self, admin_client_api, stored):
        replacement = {
            "environment_type": "linux_local",
            "connection_method": "ssh",
            "host": "127.0.0.2",
            "username": "deploy",
            "ssh_key_path": "/keys/linux",
        }
        response = admin_client_api.put(detail("mac_local_001"), replacement, format="json")

        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        # Left out: back to defaults, except secrets, enabled and host_key, which are kept.
        assert (stored.port, stored.timeout, stored.description, stored.working_directory) == (22, 300, "", "")
        assert (stored.password, stored.enabled) == ("pw-for-mac", False)
        assert (stored.host, stored.environment_type) == ("127.0.0.2", "linux_local")

    def test_the_environment_id_cannot_change(self, admin_client_api, stored):
        response = admin_client_api.patch(detail("mac_local_001"), {"environment_id": "other"}, format="json")
        assert response.status_code == 400
        assert list(response.json()) == ["environment_id"]

    def test_delete_removes_it_and_an_unknown_one_is_404(self, admin_client_api, stored):
        assert admin_client_api.delete(detail("mac_local_001")).status_code == 204
        assert not RemoteEnvironment.objects.exists()
        assert admin_client_api.delete(detail("mac_local_001")).status_code == 404
        assert admin_client_api.get(detail("mac_local_001")).status_code == 404


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOO6/wqb4OSnbUGEUbiOZCt8iKLfjR5dTYcYuVfr04gB"


class TestHostKeyApproval:
    @pytest.fixture
    def stored(self, db):
        return make_environment("mac_local_001")

    def test_a_put_with_a_new_host_key_stamps_the_user_and_the_time_as_its_approval(self, admin_client_api, stored):
        replacement = {**SSH, "host_key": HOST_KEY}
        response = admin_client_api.put(detail("mac_local_001"), replacement, format="json")

        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        assert (stored.host_key, stored.host_key_approved_by) == (HOST_KEY, admin_client_api.user)
        assert stored.host_key_approved_at is not None

    def test_a_patch_with_a_new_host_key_stamps_the_user_and_the_time_as_its_approval(self, admin_client_api, stored):
        response = admin_client_api.patch(detail("mac_local_001"), {"host_key": HOST_KEY}, format="json")

        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        assert (stored.host_key, stored.host_key_approved_by) == (HOST_KEY, admin_client_api.user)
        assert stored.host_key_approved_at is not None

    def test_a_patch_clearing_the_host_key_clears_its_approval(self, admin_client_api, stored):
        assert admin_client_api.patch(detail("mac_local_001"), {"host_key": HOST_KEY}, format="json").status_code == 200

        response = admin_client_api.patch(detail("mac_local_001"), {"host_key": ""}, format="json")

        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        assert (stored.host_key, stored.host_key_approved_by, stored.host_key_approved_at) == ("", None, None)
