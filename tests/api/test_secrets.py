"""Secrets are write-only: no response of any endpoint carries a value that was set."""

import pytest

from deployments.models import CoordinationStatus as C, TargetStatus as T
from tests.factories import make_coordination

SECRETS = {
    "password": "s3cret-ssh-password-91ab",
    "api_token": "s3cret-agent-token-5c2d",
    "webhook_secret": "whsec_c2VjcmV0LXdlYmhvb2stc2VjcmV0LTc3ZWY=",
}
LIST = "/api/deployment/environments"


NEW_ENVIRONMENTS = [
    {
        "environment_id": "ssh_env",
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "password": SECRETS["password"],
    },
    {
        "environment_id": "http_env",
        "environment_type": "docker",
        "connection_method": "http_api",
        "api_endpoint": "http://127.0.0.1:8082/api/deploy/init",
        "api_token": SECRETS["api_token"],
    },
    {
        "environment_id": "hook_env",
        "environment_type": "linux_local",
        "connection_method": "webhook",
        "webhook_url": "http://127.0.0.1:8083/webhook/deploy",
        "webhook_secret": SECRETS["webhook_secret"],
    },
]
# Invalid requests that carry secrets: the errors must not echo them.
INVALID_ENVIRONMENT = {
    "environment_id": "bad env",
    "environment_type": "linux_local",
    "connection_method": "ssh",
    "port": 0,
    "password": SECRETS["password"],
    "api_token": SECRETS["api_token"],
}
INVALID_IMPORT = {
    "environments": [
        {
            "environment_id": "ssh_env",
            "environment_type": "linux_local",
            "connection_method": "ssh",
            "port": "x",
            "host": "127.0.0.1",
            "username": "deploy",
            "password": SECRETS["password"],
            "api_token": 1,
        },
    ]
}
READ_PATHS = (
    LIST,
    f"{LIST}/ssh_env/",
    f"{LIST}/http_env/",
    f"{LIST}/hook_env/",
    "/api/deployment/status",
    "/api/deployment/status?coordination_id=deploy_s",
    "/api/deployment/history",
    "/api/deployment/coordinations/deploy_s/",
    "/api/deployment/coordinations/deploy_s/events/",
    "/api/deployment/config",
)


@pytest.fixture
def responses(admin_client_api, viewer_client, db):
    """Set every secret through the API, then call every endpoint, successes and
    failures, and keep every response."""
    admin = admin_client_api
    seen = [admin.post(LIST, body, format="json") for body in NEW_ENVIRONMENTS]
    seen.append(admin.post(LIST, INVALID_ENVIRONMENT, format="json"))
    seen.append(admin.patch(f"{LIST}/ssh_env/", {"port": -1, "password": SECRETS["password"]}, format="json"))
    seen.append(admin.patch(f"{LIST}/ssh_env/", {"description": "changed"}, format="json"))
    seen.append(
        admin.put(
            f"{LIST}/http_env/",
            {"environment_type": "docker", "connection_method": "http_api", "host": "127.0.0.1"},
            format="json",
        )
    )
    make_coordination("deploy_s", C.FAILED, {"ssh_env": T.FAILED, "http_env": T.SUCCEEDED, "hook_env": T.FAILED})
    seen.append(admin.post("/api/deployment/trigger-local", {"environments": ["ssh_env"]}, format="json"))
    seen.append(admin.post("/api/deployment/coordinations/deploy_s/retry/"))
    seen.extend(client.get(path) for client in (admin, viewer_client) for path in READ_PATHS)
    seen.append(admin.post("/api/deployment/config?dry_run=true", INVALID_IMPORT, format="json"))
    seen.append(viewer_client.patch(f"{LIST}/ssh_env/", {"password": SECRETS["password"]}, format="json"))
    seen.append(admin.delete(f"{LIST}/hook_env/"))
    return seen


def test_no_response_contains_a_secret_value(responses):
    assert len(responses) > 25
    for response in responses:
        body = response.content.decode()
        for name, value in SECRETS.items():
            assert value not in body, f"{name} in {response.request['REQUEST_METHOD']} {response.request['PATH_INFO']}"


def test_responses_say_which_secrets_are_set(responses, viewer_client):
    environments = {env["environment_id"]: env for env in viewer_client.get(LIST).json()["results"]}
    assert {name: environments["ssh_env"][f"{name}_set"] for name in SECRETS} == {
        "password": True,
        "api_token": False,
        "webhook_secret": False,
    }
    # The PUT left the token out: kept.
    assert environments["http_env"]["api_token_set"] is True
