"""The EC2, auto-deploy and notification settings fail at start, naming the variable."""

import pytest

from tests.support.processes import start_with


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"EC2_STAGE_TIMEOUT_SECONDS": "0"}, "EC2_STAGE_TIMEOUT_SECONDS must be at least 1"),
        ({"EC2_POLL_SECONDS": "often"}, "EC2_POLL_SECONDS must be an integer"),
        ({"AUTO_DEPLOY_ON_STARTUP": "sometimes"}, "AUTO_DEPLOY_ON_STARTUP must be true or false"),
        ({"AUTO_DEPLOY_ON_STARTUP": "true"}, "AUTO_DEPLOY_ON_STARTUP=true needs DEPLOYMENT_VERSION"),
        ({"AUTO_DEPLOY_ON_STARTUP": "true", "DEPLOYMENT_VERSION": "v 1"}, "needs DEPLOYMENT_VERSION"),
        ({"NOTIFICATION_WEBHOOK_URL": "hooks.example.com/x"}, "NOTIFICATION_WEBHOOK_URL must start with http://"),
        ({"NOTIFICATION_WEBHOOK_SECRET": "whsec_not base64!"}, "NOTIFICATION_WEBHOOK_SECRET starts with whsec_"),
        ({"NOTIFICATION_RETRIES": "-1"}, "NOTIFICATION_RETRIES must be at least 0"),
        ({"AUTO_DEPLOY_TAGS": "mac, Linux"}, "AUTO_DEPLOY_TAGS: 'Linux' is not a tag"),
        ({"AUTO_DEPLOY_EXCLUDE_TAGS": "flaky,team a"}, "AUTO_DEPLOY_EXCLUDE_TAGS: 'team a' is not a tag"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(variables, message):
    result = start_with(**variables)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_auto_deploy_with_a_version_starts():
    result = start_with(AUTO_DEPLOY_ON_STARTUP="true", DEPLOYMENT_VERSION="v1.2.3")

    assert result.returncode == 0, result.stderr


def test_auto_deploy_tags_that_are_tags_start():
    result = start_with(AUTO_DEPLOY_TAGS=" mac , linux ", AUTO_DEPLOY_EXCLUDE_TAGS="flaky")

    assert result.returncode == 0, result.stderr
