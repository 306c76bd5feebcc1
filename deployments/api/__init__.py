"""The REST API for deployments (under /api/deployment/), the platform's health (/api/health)
and the OpenAPI schema. Environments' endpoints live in environments.api."""
