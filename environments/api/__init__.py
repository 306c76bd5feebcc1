"""The REST API for environments: /api/deployment/environments[/<environment_id>/]."""
