"""The model's own rules for an environment's identifiers."""

import pytest
from django.core.exceptions import ValidationError

from environments.models import RemoteEnvironment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("field", "value"), [("environment_id", "linux_001\n"), ("host", "127.0.0.1\n")])
def test_an_identifier_with_a_trailing_newline_is_refused(field, value):
    """`$` in a pattern lets a final newline through; a newline in a host or an id would
    reach logs and shell commands."""
    values = {
        "environment_id": "linux_001",
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/keys/id_ed25519",
        field: value,
    }
    with pytest.raises(ValidationError) as caught:
        RemoteEnvironment(**values).full_clean(validate_unique=False)
    assert field in caught.value.message_dict
