"""`manage.py trigger_local`'s own flags, checked before anything starts."""

import pytest
from django.core.management import CommandError, call_command

from deployments.models import Coordination
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("timeout", ["1e12", "inf", "nan", "604801"])
def test_a_wait_timeout_beyond_seven_days_is_refused_naming_the_flag_and_the_limit(timeout):
    make_environment("linux_local_001")

    with pytest.raises(CommandError) as raised:
        call_command("trigger_local", "--wait", "--timeout", timeout)

    assert "--timeout" in str(raised.value)
    assert "604800 seconds (7 days)" in str(raised.value)
    assert not Coordination.objects.exists()
