"""PowerAutomation deployment coordinator: a client of its REST API.

The CLI is `powerautomation` (cli.py); the Python API keeps the original component's
names (coordinator.py): `RemoteDeploymentCoordinator(url=..., token=...)`,
`RemoteEnvironmentConfig`, `RemoteEnvironmentType`."""

from powerautomation_client.api import Client
from powerautomation_client.config import Config
from powerautomation_client.coordinator import (
    CoordinationResult,
    DeploymentCoordinationStatus,
    RemoteDeploymentCoordinator,
    RemoteEnvironmentConfig,
    RemoteEnvironmentType,
)
from powerautomation_client.errors import (
    APIError,
    AuthenticationError,
    BadAnswerError,
    ClientError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ThrottledError,
    UnreachableError,
    ValidationError,
    VersionMismatchError,
)

__version__ = "1.0.0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadAnswerError",
    "Client",
    "ClientError",
    "Config",
    "ConfigurationError",
    "ConflictError",
    "CoordinationResult",
    "DeploymentCoordinationStatus",
    "NotFoundError",
    "PermissionDeniedError",
    "RemoteDeploymentCoordinator",
    "RemoteEnvironmentConfig",
    "RemoteEnvironmentType",
    "ServerError",
    "ThrottledError",
    "UnreachableError",
    "ValidationError",
    "VersionMismatchError",
    "__version__",
]
