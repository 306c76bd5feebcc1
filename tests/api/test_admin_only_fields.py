"""What only ADMINs see: an agent's answer body, EC2 user_data and the notification
webhook's URL are masked for VIEWERs on every endpoint that shows them."""

import pytest

from deployments.models import CoordinationStatus as C, TargetStatus as T
from deployments.redaction import HIDDEN
from environments.models import SettingsBlock
from tests.conftest import AGENT_BODY
from tests.factories import make_coordination

BASE = "/api/deployment/coordinations"
BODY_WORD = "hunter2-c4f1"  # a piece of AGENT_BODY
USER_DATA = "#!/bin/sh\necho 'DB_PASSWORD=s3cret-in-user-data-81f0' >> /etc/platform.env\n"
SLACK = "https://hooks.slack.com/services/T000/B000/slack-credential-5e77"

VIEWER_URLS = [
    f"{BASE}/deploy_refused/",
    "/api/deployment/status?coordination_id=deploy_refused",
    "/api/deployment/history",
    f"{BASE}/deploy_refused/events/",
]


@pytest.mark.parametrize("url", VIEWER_URLS)
def test_no_response_a_viewer_reads_carries_the_agents_answer_body(viewer_client, refused_by_agent, url):
    response = viewer_client.get(url)

    assert response.status_code == 200
    assert BODY_WORD not in response.content.decode()


def test_a_viewer_sees_the_refusals_status_code_and_that_its_body_is_hidden(viewer_client, refused_by_agent):
    target = viewer_client.get(f"{BASE}/deploy_refused/").json()["environments"][0]

    assert (target["status"], target["reason"]) == (T.FAILED, "server_error")
    assert "HTTP 500" in target["error"] and "ADMINs only" in target["error"]
    assert target["response_excerpt"] == HIDDEN


def test_an_admin_sees_the_agents_answer_body_in_the_coordination(admin_client_api, refused_by_agent):
    target = admin_client_api.get(f"{BASE}/deploy_refused/").json()["environments"][0]

    assert target["response_excerpt"] == AGENT_BODY
    assert BODY_WORD not in target["error"]


def test_an_admin_sees_the_agents_answer_body_in_the_events(admin_client_api, refused_by_agent):
    events = admin_client_api.get(f"{BASE}/deploy_refused/events/").json()["events"]

    assert AGENT_BODY in [event["data"].get("response_excerpt") for event in events]


@pytest.fixture
def with_user_data(db):
    config = {"image_id": "ami-0123456789abcdef0", "instance_type": "t3.micro", "user_data": USER_DATA}
    return make_coordination("deploy_ud", C.COMPLETED, {}, ec2_deployment_config=config)


@pytest.mark.parametrize("url", [f"{BASE}/deploy_ud/", "/api/deployment/status?coordination_id=deploy_ud"])
def test_a_viewer_sees_user_data_only_as_its_size(viewer_client, with_user_data, url):
    config = viewer_client.get(url).json()["ec2_deployment_config"]

    assert config == {
        "image_id": "ami-0123456789abcdef0",
        "instance_type": "t3.micro",
        "user_data": f"set ({len(USER_DATA.encode())} bytes)",
    }


def test_an_admin_sees_user_data_whole(admin_client_api, with_user_data):
    config = admin_client_api.get(f"{BASE}/deploy_ud/").json()["ec2_deployment_config"]

    assert config["user_data"] == USER_DATA


@pytest.mark.parametrize("who", ["viewer_client", "admin_client_api"])
def test_the_config_export_shows_the_notification_webhook_only_as_its_host(request, who):
    client = request.getfixturevalue(who)
    SettingsBlock.objects.create(
        name="notification_settings", values={"enable_notifications": True, "notification_webhook": SLACK}
    )

    response = client.get("/api/deployment/config")

    assert response.json()["notification_settings"] == {
        "enable_notifications": True,
        "notification_webhook": "https://hooks.slack.com/***",
    }
    assert "slack-credential" not in response.content.decode()
