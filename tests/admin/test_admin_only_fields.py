"""What only ADMINs see in the admin: an agent's answer body, EC2 user_data and the
notification webhook's URL are masked on every page (and live view) a VIEWER opens."""

import json

import pytest

from deployments.models import CoordinationStatus as C, StageEvent
from environments.models import SettingsBlock
from tests.conftest import AGENT_BODY
from tests.factories import make_coordination

BODY_WORD = "hunter2-c4f1"  # a piece of AGENT_BODY
USER_DATA = "#!/bin/sh\necho 'DB_PASSWORD=s3cret-in-user-data-81f0' >> /etc/platform.env\n"
USER_DATA_WORD = "s3cret-in-user-data-81f0"
SLACK = "https://hooks.slack.com/services/T000/B000/slack-credential-5e77"
COORDINATIONS = "/admin/deployments/coordination/"


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_a_viewers_coordination_page_shows_the_refusal_without_the_agents_body(viewer, refused_by_agent):
    shown = text(viewer.get(f"{COORDINATIONS}{refused_by_agent.pk}/change/"))

    assert "HTTP 500" in shown
    assert BODY_WORD not in shown


def test_an_admins_coordination_page_shows_the_agents_body(operator, refused_by_agent):
    shown = text(operator.get(f"{COORDINATIONS}{refused_by_agent.pk}/change/"))

    assert "Response body (ADMINs only)" in shown and BODY_WORD in shown


def test_a_viewers_live_view_carries_no_agents_body(viewer, refused_by_agent):
    live = text(viewer.get(f"{COORDINATIONS}{refused_by_agent.pk}/live/?after=0"))

    assert "HTTP 500" in live
    assert BODY_WORD not in live


def test_a_viewers_environment_page_shows_its_last_refusal_without_the_body(viewer, refused_by_agent):
    environment = refused_by_agent.targets.get().remote_environment

    shown = text(viewer.get(f"/admin/environments/remoteenvironment/{environment.pk}/change/"))

    assert "HTTP 500" in shown
    assert BODY_WORD not in shown


def test_a_viewers_stage_event_page_hides_the_agents_body(viewer, refused_by_agent):
    event = StageEvent.objects.filter(data__has_key="response_excerpt").first()
    assert event is not None and event.data["response_excerpt"] == AGENT_BODY

    shown = text(viewer.get(f"/admin/deployments/stageevent/{event.pk}/change/"))

    assert BODY_WORD not in shown


@pytest.fixture
def with_user_data(db):
    config = {"image_id": "ami-0123456789abcdef0", "instance_type": "t3.micro", "user_data": USER_DATA}
    return make_coordination("deploy_ud", C.COMPLETED, {}, ec2_deployment_config=config)


def test_a_viewers_coordination_page_shows_user_data_only_as_its_size(viewer, with_user_data):
    shown = text(viewer.get(f"{COORDINATIONS}{with_user_data.pk}/change/"))

    assert f"set ({len(USER_DATA.encode())} bytes)" in shown
    assert USER_DATA_WORD not in shown


def test_an_admins_coordination_page_shows_user_data_whole(operator, with_user_data):
    shown = text(operator.get(f"{COORDINATIONS}{with_user_data.pk}/change/"))

    assert USER_DATA_WORD in shown


@pytest.fixture
def webhook_block(db):
    return SettingsBlock.objects.create(
        name="notification_settings", values={"enable_notifications": True, "notification_webhook": SLACK}
    )


def test_a_viewers_settings_block_page_shows_the_webhook_only_as_its_host(viewer, webhook_block):
    shown = text(viewer.get(f"/admin/environments/settingsblock/{webhook_block.pk}/change/"))

    assert "https://hooks.slack.com/***" in shown
    assert "slack-credential" not in shown


def test_an_admins_settings_block_page_edits_the_webhook_whole(operator, webhook_block):
    shown = text(operator.get(f"/admin/environments/settingsblock/{webhook_block.pk}/change/"))

    assert "slack-credential-5e77" in shown


def test_the_admins_export_shows_the_webhook_only_as_its_host(operator, webhook_block):
    exported = json.loads(text(operator.get("/admin/environments/remoteenvironment/export/")))

    assert exported["notification_settings"]["notification_webhook"] == "https://hooks.slack.com/***"
