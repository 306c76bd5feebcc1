"""Project-wide API plumbing: how request bodies are read and how errors become answers."""

from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from powerautomation.parsers import body_limit_message

UNKNOWN_FIELD = "unknown field: this endpoint does not take it"


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


class RejectUnknownFieldsMixin:
    """For a serializer: a body field it does not have is a 400 naming that field (with
    the other fields' errors), not silently dropped. Read-only fields count as known, so a
    body shaped like the serializer's own answer is accepted."""

    def to_internal_value(self, data):
        unknown = {}
        if isinstance(data, Mapping):
            unknown = {name: [UNKNOWN_FIELD] for name in data if name not in self.fields}  # type: ignore[attr-defined]
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 page (handler400), except under /api/: JSON like every API answer, and
    a body over DATA_UPLOAD_MAX_MEMORY_SIZE says so with the limit."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        detail = body_limit_message(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    else:
        detail = "Bad request."
    return JsonResponse({"detail": detail}, status=400)
