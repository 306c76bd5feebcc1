"""An EC2 endpoint for the tests: moto in server mode on a free loopback port (a real HTTP
EC2 API, not a patched client), with AMI validation on, so an unknown AMI fails as on AWS."""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import stop_process

REGION = "us-east-1"


@dataclass
class MotoServer:
    """A moto_server process and the environment that points boto3 at it."""

    port: int
    process: subprocess.Popen = field(repr=False)
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use this endpoint through boto3's standard chain. No
        config files and no instance metadata lookups: nothing leaves loopback."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        }

    def client(self):
        import boto3

        return boto3.client(
            "ec2",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)


def start_moto(tmp: Path, **extra_env: str) -> MotoServer:
    port = free_port()
    log = tmp / f"moto-{port}.log"
    env = dict(os.environ, MOTO_EC2_LOAD_DEFAULT_AMIS="false", MOTO_ENABLE_AMI_VALIDATION="true", **extra_env)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = MotoServer(port=port, process=process, log=log)
    try:
        wait_for_port(port, timeout=30)
    except RuntimeError:
        server.stop()
        raise RuntimeError(f"moto_server did not start: {log.read_text(errors='replace')}") from None
    return server
