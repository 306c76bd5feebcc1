"""Many environments (and a coordination over them) at once, written with bulk_create: the
API's fleet-size tests need thousands of rows in well under a second."""

from deployments.models import Coordination, CoordinationTarget
from environments.models import RemoteEnvironment


def make_fleet(count: int, *, prefix: str = "fleet", **fields) -> list[RemoteEnvironment]:
    """`count` SSH environments `<prefix>_0000`, `<prefix>_0001`, ... with `fields` set on each."""
    values = {
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/nonexistent/id_ed25519",
        "tags": [],
        **fields,
    }
    RemoteEnvironment.objects.bulk_create(
        RemoteEnvironment(environment_id=f"{prefix}_{index:04d}", **values) for index in range(count)
    )
    return list(RemoteEnvironment.objects.filter(environment_id__startswith=f"{prefix}_"))


def make_fleet_coordination(
    coordination_id: str, status: str, environments: list[RemoteEnvironment], statuses: list[str], **target_fields
) -> Coordination:
    """A coordination over `environments`, the nth target in `statuses[n % len(statuses)]`."""
    coordination = Coordination.objects.create(coordination_id=coordination_id, status=status, triggered_by="api")
    CoordinationTarget.objects.bulk_create(
        CoordinationTarget(
            coordination=coordination,
            remote_environment=environment,
            environment_id=environment.environment_id,
            status=statuses[index % len(statuses)],
            **target_fields,
        )
        for index, environment in enumerate(environments)
    )
    return coordination
