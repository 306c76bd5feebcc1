"""Connection methods, chosen by `RemoteEnvironment.connection_method`.

A new method is one new module with a `Connector` class and one line in `CONNECTORS`.
"""

from environments.connectors.base import (
    Connector,
    ConnectorError,
    DeploymentContext,
    Reporter,
    RunResult,
    Target,
)
from environments.connectors.http_api import HTTPAPIConnector
from environments.connectors.polling import PollingConnector
from environments.connectors.ssh import SSHConnector
from environments.connectors.webhook import WebhookConnector

CONNECTORS: dict[str, type] = {
    "ssh": SSHConnector,
    "http_api": HTTPAPIConnector,
    "webhook": WebhookConnector,
    "polling": PollingConnector,
}


def connector_for(connection_method: str) -> Connector:
    try:
        return CONNECTORS[connection_method]()
    except KeyError:
        raise ConnectorError(
            f"connection method {connection_method!r} is not supported yet",
            reason="unsupported_method",
            permanent=True,
        ) from None


__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorError",
    "DeploymentContext",
    "Reporter",
    "RunResult",
    "Target",
    "connector_for",
]
