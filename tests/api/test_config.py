"""GET|POST config: the config file as export_environments and import_environments see it."""

from environments.models import RemoteEnvironment, SettingsBlock
from tests.factories import make_environment

URL = "/api/deployment/config"

FILE = {
    "environments": [
        {
            "environment_id": "mac_local_001",
            "environment_type": "mac_local",
            "connection_method": "ssh",
            "host": "127.0.0.1",
            "username": "alex",
            "password": "file-password-1",
            "color": "blue",
        }
    ],
    "default_settings": {"timeout": 600, "retry_count": 1},
}


def test_import_applies_the_file_and_its_settings(admin_client_api, db):
    make_environment("old_env")

    response = admin_client_api.post(f"{URL}?prune=true", FILE, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "dry_run": False,
        "created": ["mac_local_001"],
        "updated": [],
        "unchanged": [],
        "deleted": ["old_env"],
        "warnings": ["environments[0] (mac_local_001).color: unknown field, ignored"],
        "mapped": [],
    }
    environment = RemoteEnvironment.objects.get()
    assert (environment.environment_id, environment.timeout, environment.password) == (
        "mac_local_001",
        600,
        "file-password-1",
    )
    assert SettingsBlock.objects.get(name="default_settings").values == {"timeout": 600, "retry_count": 1}


def test_a_dry_run_writes_nothing(admin_client_api, db):
    response = admin_client_api.post(f"{URL}?dry_run=true", FILE, format="json")
    assert response.json()["created"] == ["mac_local_001"]
    assert response.json()["dry_run"] is True
    assert not RemoteEnvironment.objects.exists()


def test_an_invalid_file_is_400_listing_every_problem_and_writes_nothing(admin_client_api, db):
    bad = {"environments": [{"environment_id": "a", "port": "22"}, {"environment_type": "docker"}]}
    response = admin_client_api.post(URL, bad, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "environments[0] (a).port: must be a whole number (got '22')" in errors
    assert "environments[1].environment_id: required" in errors
    assert not RemoteEnvironment.objects.exists()


def test_a_bad_flag_is_400_naming_it(admin_client_api, db):
    response = admin_client_api.post(f"{URL}?prune=maybe", FILE, format="json")
    assert (response.status_code, list(response.json())) == (400, ["prune"])


def test_export_is_the_file_without_secrets(viewer_client, db):
    make_environment("mac_local_001", password="never-exported", ssh_key_path="")
    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": 8})

    response = viewer_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert [env["environment_id"] for env in body["environments"]] == ["mac_local_001"]
    assert "password" not in body["environments"][0]
    assert body["deployment_settings"] == {"parallel_limit": 8}
    assert "never-exported" not in response.content.decode()


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOO6/wqb4OSnbUGEUbiOZCt8iKLfjR5dTYcYuVfr04gB"


def test_a_host_key_the_imported_file_brings_is_approved_by_the_importing_user(admin_client_api, db):
    make_environment("mac_local_001")
    file = {"environments": [{**FILE["environments"][0], "host_key": HOST_KEY}]}

    response = admin_client_api.post(URL, file, format="json")

    assert response.status_code == 200, response.content
    environment = RemoteEnvironment.objects.get()
    assert (environment.host_key, environment.host_key_approved_by) == (HOST_KEY, admin_client_api.user)
    assert environment.host_key_approved_at is not None
