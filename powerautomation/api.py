"""Project-wide API plumbing: how errors become answers."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler


def field_errors(exc: DjangoValidationError, paths: dict[str, tuple[str, ...]] | None = None) -> dict:
    """A Django ValidationError as DRF's 400 body: each message under its field's name.
    `paths` maps a service's argument names to the API's (nested) fields, e.g.
    `ec2_instance_id` → `("ec2", "instance_id")`; errors tied to no field go under
    `non_field_errors`."""
    if not hasattr(exc, "error_dict"):
        return {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
    errors: dict = {}
    for field, messages in exc.message_dict.items():
        name = api_settings.NON_FIELD_ERRORS_KEY if field == "__all__" else field
        *parents, leaf = (paths or {}).get(name, (name,))
        place = errors
        for parent in parents:
            place = place.setdefault(parent, {})
        place.setdefault(leaf, []).extend(messages)
    return errors


def exception_handler(exc, context):
    """DRF's handler, plus: a service's Django ValidationError is a 400 naming the field.
    A view maps its services' argument names to its own fields with `field_paths`."""
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(field_errors(exc, getattr(context.get("view"), "field_paths", None)))
    return drf_exception_handler(exc, context)
