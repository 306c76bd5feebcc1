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
    ids = [env["environment_id"] for env in viewer_client.get(f"{LIST}?enabled=false").json()["results"]]
    assert ids == ["env_off"]
    assert len(viewer_client.get(f"{LIST}?connection_method=ssh").json()["results"]) == 2


@pytest.mark.parametrize(
    "query", ["enabled=maybe", "connection_method=ftp", "environment_type=amiga", "health=sick", "helth=unhealthy"]
)
def test_a_list_filter_with_a_value_it_cannot_take_is_400_naming_the_parameter(viewer_client, db, query):
    make_environment("env_on")
    parameter = query.split("=")[0]

    response = viewer_client.get(f"{LIST}?{query}")

    assert response.status_code == 400, response.content
    assert list(response.json()) == [parameter]


def test_a_create_with_an_unknown_field_is_400_naming_it_and_stores_nothing(admin_client_api, db):
    response = admin_client_api.post(LIST, {**SSH, "hostname": "typo.internal", "prot": 22}, format="json")

    assert response.status_code == 400, response.content
    assert sorted(response.json()) == ["hostname", "prot"]
    assert not RemoteEnvironment.objects.exists()


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_change_with_an_unknown_field_is_400_naming_it_and_changes_nothing(admin_client_api, db, method):
    make_environment("mac_local_001", description="as it was")

    response = getattr(admin_client_api, method)(
        detail("mac_local_001"), {**SSH, "description": "renamed", "timeout_seconds": 5}, format="json"
    )

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["timeout_seconds"]
    assert RemoteEnvironment.objects.get().description == "as it was"


def test_a_description_with_a_control_character_is_400_naming_it(admin_client_api, db):
    response = admin_client_api.post(LIST, {**SSH, "description": "Alex's Mac\x1b[2J"}, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["description"]
    assert not RemoteEnvironment.objects.exists()


def test_a_description_may_hold_tabs_and_line_breaks(admin_client_api, db):
    response = admin_client_api.post(LIST, {**SSH, "description": "Alex's Mac\r\n\tsecond line"}, format="json")

    assert response.status_code == 201, response.content
    assert RemoteEnvironment.objects.get().description == "Alex's Mac\r\n\tsecond line"


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
            "host": "127.0.0.1",
            "port": 2222,  # the same address: the kept password may still go there
            "username": "deploy",
            "ssh_key_path": "/keys/linux",
        }
        response = admin_client_api.put(detail("mac_local_001"), replacement, format="json")

        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        # Left out: back to defaults, except secrets, enabled and host_key, which are kept.
        assert (stored.timeout, stored.description, stored.working_directory) == (300, "", "")
        assert (stored.password, stored.enabled) == ("pw-for-mac", False)
        assert (stored.ssh_key_path, stored.environment_type) == ("/keys/linux", "linux_local")

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


class TestRetargeting:
    """A stored secret is never sent to a new address: a change of where it goes must give
    it again (else a preflight would hand it to whoever listens there)."""

    @pytest.fixture
    def stored(self, db):
        return make_environment(
            "docker_one",
            connection_method="http_api",
            api_endpoint="http://127.0.0.1:8082/api/deploy/init",
            api_token="stored-token-9b1e",  # noqa: S106
        )

    def test_patch_changing_api_endpoint_without_the_token_is_refused_naming_api_token(self, admin_client_api, stored):
        change = {"api_endpoint": "http://127.0.0.1:9/listener"}
        response = admin_client_api.patch(detail("docker_one"), change, format="json")

        assert response.status_code == 400
        assert list(response.json()) == ["api_token"]
        stored.refresh_from_db()
        assert (stored.api_endpoint, stored.api_token) == ("http://127.0.0.1:8082/api/deploy/init", "stored-token-9b1e")

    def test_patch_changing_api_endpoint_with_a_new_token_keeps_both(self, admin_client_api, stored):
        change = {"api_endpoint": "http://127.0.0.1:9/agent", "api_token": "new-token-44d0"}
        response = admin_client_api.patch(detail("docker_one"), change, format="json")

        assert response.status_code == 200, response.content
        stored.refresh_from_db()
        assert (stored.api_endpoint, stored.api_token) == ("http://127.0.0.1:9/agent", "new-token-44d0")

    def test_put_changing_the_host_without_the_token_is_refused_naming_api_token(self, admin_client_api, stored):
        replacement = {"environment_type": "docker", "connection_method": "http_api", "host": "127.0.0.2"}
        response = admin_client_api.put(detail("docker_one"), replacement, format="json")

        assert response.status_code == 400
        assert list(response.json()) == ["api_token"]
        stored.refresh_from_db()
        assert stored.api_endpoint == "http://127.0.0.1:8082/api/deploy/init"


# --- Tags ---------------------------------------------------------------------------------


def test_tags_are_stored_and_answered_in_their_order(admin_client_api, db):
    response = admin_client_api.post(LIST, {**SSH, "tags": ["mac", "team-a"]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["tags"] == ["mac", "team-a"]
    assert RemoteEnvironment.objects.get().tags == ["mac", "team-a"]
    assert admin_client_api.get(detail("mac_local_001")).json()["tags"] == ["mac", "team-a"]


def test_an_environment_without_tags_answers_an_empty_list(viewer_client, db):
    make_environment("env_plain")
    assert viewer_client.get(detail("env_plain")).json()["tags"] == []


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ("mac", "must be a list of tags"),
        ([1], "every tag must be a string (got 1)"),
        (["Mac"], "'Mac' is not a tag"),
        (["mac", "mac"], "a tag may appear once (repeated: mac)"),
        ([f"t{i}" for i in range(21)], "at most 20 tags (got 21)"),
    ],
    ids=["string", "number", "uppercase", "duplicate", "21-tags"],
)
def test_tags_breaking_the_rule_are_400_naming_the_field_and_change_nothing(admin_client_api, db, tags, problem):
    make_environment("mac_local_001", tags=["mac"])

    response = admin_client_api.patch(detail("mac_local_001"), {"tags": tags}, format="json")

    assert response.status_code == 400, response.content
    (message,) = response.json()["tags"]
    assert problem in message
    assert RemoteEnvironment.objects.get().tags == ["mac"]


def test_a_patch_of_tags_changes_only_them(admin_client_api, db):
    make_environment("mac_local_001", tags=["mac"], description="kept")

    response = admin_client_api.patch(detail("mac_local_001"), {"tags": ["mac", "flaky"]}, format="json")

    assert response.status_code == 200, response.content
    stored = RemoteEnvironment.objects.get()
    assert (stored.tags, stored.description) == (["mac", "flaky"], "kept")


def test_a_put_without_tags_keeps_the_stored_tags(admin_client_api, db):
    make_environment("mac_local_001", tags=["mac"])

    response = admin_client_api.put(detail("mac_local_001"), SSH, format="json")

    assert response.status_code == 200, response.content
    assert RemoteEnvironment.objects.get().tags == ["mac"]


def test_a_viewer_cannot_write_tags(viewer_client, db):
    make_environment("mac_local_001", tags=["mac"])

    response = viewer_client.patch(detail("mac_local_001"), {"tags": ["linux"]}, format="json")

    assert response.status_code == 403
    assert RemoteEnvironment.objects.get().tags == ["mac"]


@pytest.fixture
def tagged(db):
    make_environment("mac_a", tags=["mac", "team-a"])
    make_environment("mac_off", tags=["mac"], enabled=False)
    make_environment("linux_a", tags=["linux"])
    make_environment("plain")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tag=mac", ["mac_a", "mac_off"]),
        ("tag=mac&tag=linux", ["linux_a", "mac_a", "mac_off"]),
        ("tag=mac,linux", ["linux_a", "mac_a", "mac_off"]),
        ("tag=team-a&enabled=true", ["mac_a"]),
        ("tag=windows", []),
        ("tag=", ["linux_a", "mac_a", "mac_off", "plain"]),
    ],
    ids=["one", "repeated", "comma-separated", "with-another-filter", "unknown", "empty"],
)
def test_the_list_filters_by_any_of_the_tags(viewer_client, tagged, query, expected):
    response = viewer_client.get(f"{LIST}?{query}")

    assert response.status_code == 200, response.content
    assert [environment["environment_id"] for environment in response.json()["results"]] == expected


@pytest.mark.parametrize("value", ["Mac", "-mac", "a%20b"])
def test_a_tag_filter_value_that_cannot_be_a_tag_is_400_naming_the_parameter(viewer_client, tagged, value):
    response = viewer_client.get(f"{LIST}?tag=mac&tag={value}")

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["tag"]
    assert "is not a tag" in response.json()["tag"][0]


# --- detach: the per-environment switch for detached SSH runs -----------------------------


@pytest.mark.parametrize("detach", [True, False, None])
def test_detach_is_stored_and_answered_as_true_false_or_null(admin_client_api, db, detach):
    response = admin_client_api.post(LIST, {**SSH, "detach": detach}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["detach"] is detach
    assert RemoteEnvironment.objects.get().detach is detach


def test_an_environment_created_without_detach_follows_ssh_settings(admin_client_api, db):
    body = admin_client_api.post(LIST, SSH, format="json").json()

    assert body["detach"] is None
    assert admin_client_api.get(detail("mac_local_001")).json()["detach"] is None


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, [], {}])
def test_a_detach_that_is_not_true_false_or_null_is_400_naming_it_and_changes_nothing(admin_client_api, db, value):
    make_environment("mac_local_001", detach=False)

    response = admin_client_api.patch(detail("mac_local_001"), {"detach": value}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detach": ["Must be true, false or null."]}
    assert RemoteEnvironment.objects.get().detach is False


def test_a_patch_of_detach_changes_it_and_a_put_without_it_keeps_it(admin_client_api, db):
    make_environment("mac_local_001")

    response = admin_client_api.patch(detail("mac_local_001"), {"detach": False}, format="json")
    assert response.status_code == 200, response.content
    assert RemoteEnvironment.objects.get().detach is False

    response = admin_client_api.put(detail("mac_local_001"), {**SSH, "description": "renamed"}, format="json")
    assert response.status_code == 200, response.content
    assert RemoteEnvironment.objects.get().detach is False

    response = admin_client_api.patch(detail("mac_local_001"), {"detach": None}, format="json")
    assert response.status_code == 200, response.content
    assert RemoteEnvironment.objects.get().detach is None


def test_a_viewer_reads_detach_but_cannot_write_it(viewer_client, db):
    make_environment("mac_local_001", detach=True)

    assert viewer_client.get(detail("mac_local_001")).json()["detach"] is True
    response = viewer_client.patch(detail("mac_local_001"), {"detach": False}, format="json")

    assert response.status_code == 403
    assert RemoteEnvironment.objects.get().detach is True
