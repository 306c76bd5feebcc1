"""The AWS side of the EC2 stage: the boto3 client, idempotency tokens, reading EC2's
answers, and AWS's errors as the stage's errors. boto3 finds credentials and region
through its standard chain; `AWS_ENDPOINT_URL` points it at an emulator."""

import hashlib


class EC2StageError(Exception):
    """The EC2 stage failed; `code` is AWS's error code when AWS said no."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def client_token(coordination_id: str) -> str:
    """RunInstances' idempotency token: a second launch for the same coordination (a worker
    that died between launching and recording) returns the first instance."""
    return "pa-" + hashlib.sha256(coordination_id.encode()).hexdigest()[:48]


def new_client():
    # boto3 is heavy and only this stage needs it: loaded when a run reaches it.
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=20,
        retries={"mode": "standard", "max_attempts": 4},
        user_agent_extra="powerautomation-coordinator",
    )
    return boto3.session.Session().client("ec2", config=config)


def instance_state(response: dict) -> str:
    for reservation in response.get("Reservations") or []:
        for instance in reservation.get("Instances") or []:
            return (instance.get("State") or {}).get("Name", "")
    return ""


def status_checks(response: dict) -> str:
    for status in response.get("InstanceStatuses") or []:
        instance = (status.get("InstanceStatus") or {}).get("Status", "?")
        system = (status.get("SystemStatus") or {}).get("Status", "?")
        return f"instance {instance}, system {system}"
    return "not reported yet"


def aws_error(exc: Exception) -> EC2StageError:
    """An error boto3 raised, as the stage's error with AWS's code and message."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError  # loaded with boto3

    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        return EC2StageError(error.get("Code") or "ClientError", error.get("Message") or str(exc))
    if isinstance(exc, NoCredentialsError):
        return EC2StageError("NoCredentials", f"{exc} (boto3's standard credential chain found none)")
    if isinstance(exc, NoRegionError):
        return EC2StageError("NoRegion", f"{exc} (set AWS_DEFAULT_REGION)")
    return EC2StageError(type(exc).__name__, str(exc))
