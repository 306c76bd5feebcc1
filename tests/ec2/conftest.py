"""The EC2 emulator (tests.support.moto) for the EC2 stage tests, and quick EC2 settings."""

import pytest

from tests.support.moto import start_moto


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server, monkeypatch):
    """The EC2 emulator, emptied, with this test process's boto3 pointed at it (the
    coordinator run in-process finds it as a worker would: through the environment)."""
    moto_server.reset()
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def ami(moto) -> str:
    """An AMI the emulator knows (with AMI validation on, an unknown one is refused)."""
    image = moto.client().register_image(
        Name="powerautomation-platform", RootDeviceName="/dev/xvda", Architecture="x86_64", VirtualizationType="hvm"
    )
    return image["ImageId"]


@pytest.fixture
def quick_ec2(settings):
    settings.EC2_POLL_SECONDS = 1
    settings.EC2_STAGE_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="session")
def moto_checking_credentials(tmp_path_factory):
    """A second emulator that checks access keys as AWS does (it knows none)."""
    server = start_moto(tmp_path_factory.mktemp("moto-auth"), INITIAL_NO_AUTH_ACTION_COUNT="0")
    yield server
    server.stop()
