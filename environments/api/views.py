"""Environment endpoints: list, create, read, replace, change, delete. Authentication,
roles (VIEWER reads, ADMIN writes) and throttling come from REST_FRAMEWORK in settings."""

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import BooleanField, Case, Q, Value, When
from django_filters import BooleanFilter, rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from environments.api.serializers import RemoteEnvironmentSerializer
from environments.config import MAX_CONFIG_FILE_BYTES, ConfigError, export_config
from environments.models import SECRET_FIELDS, Health, RemoteEnvironment
from environments.selectors import environments_tagged
from environments.services import environments_import
from environments.tags import TAG_HINT, is_tag, shown, split_tags
from powerautomation.filters import KnownParametersFilterBackend
from powerautomation.pagination import BoundedCursorPagination

_ERROR = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
_ERRORS = {
    401: OpenApiResponse(_ERROR, description="No valid token or session."),
    403: OpenApiResponse(_ERROR, description="The account's role does not allow this."),
    429: OpenApiResponse(_ERROR, description="Over the request limit; see Retry-After."),
}
_NOT_FOUND = {404: OpenApiResponse(_ERROR, description="No such environment.")}
_INVALID = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input: each field's problems, by field name.")
}


def environments_for_reading():
    """Environments with `<secret>_set` flags computed by the database: reads never load
    or decrypt a secret."""
    flags = {
        f"{name}_set": Case(When(Q(**{name: ""}), then=Value(False)), default=Value(True), output_field=BooleanField())
        for name in SECRET_FIELDS
    }
    return RemoteEnvironment.objects.defer(*SECRET_FIELDS).annotate(**flags)


class TrueOrFalseField(forms.Field):
    """`true`/`false` (or `1`/`0`); anything else is an error, where django-filter's own
    boolean filter quietly ignores it (`?enabled=maybe` listed every environment)."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        lowered = str(value).lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise DjangoValidationError("must be true or false")


class TrueOrFalseFilter(BooleanFilter):
    # django-filter's base BooleanFilter (the schema says boolean), without the widget that
    # turns any unknown value into "no filter".
    field_class = TrueOrFalseField


class TagsQueryField(forms.Field):
    """`?tag=mac&tag=linux` or `?tag=mac,linux`. A label that cannot be a tag is an error:
    a filter that quietly matches nothing would hide the typo."""

    widget = forms.MultipleHiddenInput  # reads every `tag` parameter, not the last one

    def to_python(self, value):
        labels = [label for item in value or [] for label in split_tags(item)]
        malformed = [label for label in labels if not is_tag(label)]
        if malformed:
            raise DjangoValidationError(f"{shown(malformed[0])} is not a tag: {TAG_HINT}")
        return labels


class TagFilter(filters.MultipleChoiceFilter):
    # A multiple-value filter (the schema says: an array, one parameter per value) whose
    # values are labels, not choices.
    field_class = TagsQueryField


class EnvironmentFilter(filters.FilterSet):
    enabled = TrueOrFalseFilter(help_text="Only enabled (true) or disabled (false) environments.")
    tag = TagFilter(
        method="filter_tag",
        help_text="Only environments with any of these tags (repeat the parameter, or separate them by commas).",
    )
    health = filters.ChoiceFilter(
        field_name="last_health",
        choices=Health.choices,
        help_text="Only environments whose last health check said this.",
    )

    class Meta:
        model = RemoteEnvironment
        fields = ("enabled", "connection_method", "environment_type", "tag", "health")

    def filter_tag(self, queryset, name, value: list[str]):
        return environments_tagged(queryset, tags=value)


ENVIRONMENTS_DEFAULT_LIMIT = 100
ENVIRONMENTS_MAX_LIMIT = 1000


class EnvironmentPagination(BoundedCursorPagination):
    """By environment_id (unique and never changed): a walk through the pages sees every
    environment that existed throughout exactly once, however many are added meanwhile."""

    ordering = ("environment_id",)
    page_size = ENVIRONMENTS_DEFAULT_LIMIT
    max_page_size = ENVIRONMENTS_MAX_LIMIT
    items = "environments"


@extend_schema_view(
    list=extend_schema(
        operation_id="environments_list",
        summary="The environments, a page at a time",
        description=f"By environment_id, {ENVIRONMENTS_DEFAULT_LIMIT} a page unless `limit` says otherwise: follow "
        "`next` (a cursor) until it is null. The config export (`config`) has every environment at once.",
        responses={200: RemoteEnvironmentSerializer(many=True), 400: _INVALID[400], **_ERRORS},
    ),
    create=extend_schema(
        operation_id="environments_create",
        summary="Register an environment",
        responses={201: RemoteEnvironmentSerializer, **_INVALID, **_ERRORS},
    ),
    retrieve=extend_schema(
        operation_id="environments_retrieve",
        summary="One environment",
        responses={200: RemoteEnvironmentSerializer, **_NOT_FOUND, **_ERRORS},
    ),
    update=extend_schema(
        operation_id="environments_update",
        summary="Replace an environment",
        description="As an entry of an imported config file: fields left out take their defaults, except the "
        "secrets, `enabled`, `host_key` and `tags`, which keep their stored values.",
        responses={200: RemoteEnvironmentSerializer, **_INVALID, **_NOT_FOUND, **_ERRORS},
    ),
    partial_update=extend_schema(
        operation_id="environments_partial_update",
        summary="Change some fields of an environment",
        responses={200: RemoteEnvironmentSerializer, **_INVALID, **_NOT_FOUND, **_ERRORS},
    ),
    destroy=extend_schema(
        operation_id="environments_destroy",
        summary="Delete an environment",
        description="Past coordinations keep its outcomes; a run in which it has not started yet fails it.",
        responses={204: None, **_NOT_FOUND, **_ERRORS},
    ),
)
@extend_schema(tags=["environments"])
class RemoteEnvironmentViewSet(viewsets.ModelViewSet):
    serializer_class = RemoteEnvironmentSerializer
    lookup_field = "environment_id"
    pagination_class = EnvironmentPagination
    filter_backends = [KnownParametersFilterBackend]
    filterset_class = EnvironmentFilter

    def get_queryset(self):
        if self.request is not None and self.request.method in SAFE_METHODS:
            return environments_for_reading()
        return RemoteEnvironment.objects.all()


def _flag(request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValidationError({name: ["must be true or false"]})
    return raw in ("true", "1")


_IDS = serializers.ListField(child=serializers.CharField())
_IMPORT_RESULT = inline_serializer(
    "ConfigImportResult",
    {
        "dry_run": serializers.BooleanField(),
        "created": _IDS,
        "updated": _IDS,
        "unchanged": _IDS,
        "deleted": _IDS,
        "warnings": serializers.ListField(child=serializers.CharField()),
        "mapped": serializers.ListField(
            child=serializers.CharField(), help_text="The original format's names moved to today's."
        ),
    },
)


class ConfigView(APIView):
    """The config file (`remote_environments.json`) as a whole, as `export_environments`
    and `import_environments` handle it."""

    # A config file as big as `import_environments` reads (other bodies: DATA_UPLOAD_MAX_MEMORY_SIZE).
    max_body_bytes = MAX_CONFIG_FILE_BYTES

    @extend_schema(
        operation_id="config_export",
        summary="The environments and settings blocks as a config file",
        description="As `export_environments`: never with secrets.",
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
        tags=["environments"],
    )
    def get(self, request):
        return Response(export_config(include_secrets=False))

    @extend_schema(
        operation_id="config_import",
        summary="Import a config file",
        description=(
            "As `import_environments`: upsert by environment_id, all or nothing. Left out of an entry, the secrets, "
            "`enabled`, `host_key` and `tags` keep their stored values. An invalid file is 400 listing every problem, "
            "and changes nothing."
        ),
        request=OpenApiTypes.OBJECT,
        parameters=[
            OpenApiParameter("dry_run", bool, description="Validate and show what would change; write nothing."),
            OpenApiParameter("prune", bool, description="Delete environments the file does not list."),
        ],
        responses={
            200: _IMPORT_RESULT,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description='An invalid file: {"errors": [every problem, each naming its place]}; '
                'a bad flag: {"prune": ["must be true or false"]}.',
            ),
            **_ERRORS,
        },
        tags=["environments"],
    )
    def post(self, request):
        dry_run, prune = _flag(request, "dry_run"), _flag(request, "prune")
        try:
            plan = environments_import(data=request.data, prune=prune, dry_run=dry_run, user=request.user)
        except ConfigError as exc:
            return Response({"errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        body = {
            outcome: [environment.environment_id for environment in environments]
            for outcome, environments in (
                ("created", plan.create),
                ("updated", plan.update),
                ("unchanged", plan.unchanged),
                ("deleted", plan.delete),
            )
        }
        return Response({"dry_run": dry_run, **body, "warnings": plan.warnings, "mapped": plan.mapped})
