"""Deployment endpoints. Each validates its input with a serializer and calls one
service or selector; permissions (ADMIN writes, VIEWER reads), authentication and
throttling come from REST_FRAMEWORK in settings."""

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from deployments.api.filters import HistoryFilter, TargetFilter
from deployments.api.health import platform_health
from deployments.api.pagination import HistoryPagination, TargetPagination, positive_int_param
from deployments.api.serializers import (
    SERVICE_FIELD_PATHS,
    BusySerializer,
    ConflictSerializer,
    CoordinationDetailSerializer,
    CoordinationSummarySerializer,
    ErrorSerializer,
    EventsPageSerializer,
    StatusOverviewSerializer,
    TargetListSerializer,
    TriggerAcceptedSerializer,
    TriggerLocalSerializer,
)
from deployments.models import Coordination, CoordinationTarget, TriggerSource
from deployments.patterns import COORDINATION_ID, matches
from deployments.selectors import (
    coordination_detail,
    coordination_events,
    coordination_finished,
    coordination_targets,
    coordinations_active,
    coordinations_finished,
    coordinations_listed,
    environment_counts,
    environments_needing_attention,
    environments_with_last_outcome,
)
from deployments.services import (
    CoordinationConflict,
    EnvironmentsBusy,
    IdempotencyKeyReused,
    coordination_approve,
    coordination_cancel,
    coordination_retry,
    coordination_start_once,
)
from powerautomation.filters import KnownParametersFilterBackend

EVENTS_DEFAULT_LIMIT = 500
EVENTS_MAX_LIMIT = 1000
EVENTS_MAX_AFTER = 2**62
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# What one answer shows at most, so that it stays small at any fleet size (3,000
# environments: the status overview under 50 KB); the rest is a paged list away.
STATUS_ACTIVE_LIMIT = 10
STATUS_TARGETS_LIMIT = 10
STATUS_ATTENTION_LIMIT = 25
HISTORY_TARGETS_LIMIT = 20
DETAIL_TARGETS_LIMIT = 100

# Error answers every authenticated endpoint can give.
AUTH_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="No valid token or session."),
    403: OpenApiResponse(ErrorSerializer, description="The account's role does not allow this."),
    429: OpenApiResponse(ErrorSerializer, description="Over the request limit; see Retry-After."),
}
_VALIDATION = OpenApiResponse(
    OpenApiTypes.OBJECT, description='Invalid input: each field\'s problems, e.g. {"ec2": {"public_ip": [...]}}.'
)
_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such coordination.")
_CONFLICT = OpenApiResponse(ConflictSerializer, description="The coordination's status does not allow this.")


def _conflict(exc: CoordinationConflict) -> Response:
    return Response({"detail": exc.message, "status": exc.status}, status=status.HTTP_409_CONFLICT)


class TriggerLocalView(APIView):
    # Where the service's arguments are in this endpoint's body, for its 400s.
    field_paths = SERVICE_FIELD_PATHS

    @extend_schema(
        operation_id="trigger_local",
        summary="Start a local deployment",
        description=(
            "Every enabled environment (or those named, plus the enabled ones with any of `tags`, less those with "
            "any of `exclude_tags`) runs its init script, as `manage.py trigger_local` does. "
            "The run is queued for a worker: follow it with `status_url` or `events_url`.\n\n"
            "Send an `Idempotency-Key` header (any unique string, e.g. a UUID) to make the request safe to retry: "
            "a replay returns the first request's coordination with 200 instead of starting another.\n\n"
            "`rollout` walks the targets in waves with a failure budget, and may wait for an ADMIN's approval "
            "after the first wave (`coordinations/<id>/approve/`). Under `concurrency: reject`, a target that "
            "another running coordination holds refuses the whole request with 409, naming each busy environment "
            "and the coordination holding it."
        ),
        request=TriggerLocalSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description=f"Up to {IDEMPOTENCY_KEY_MAX_LENGTH} printable characters, unique per request.",
            )
        ],
        responses={
            202: OpenApiResponse(TriggerAcceptedSerializer, description="Queued."),
            200: OpenApiResponse(TriggerAcceptedSerializer, description="A replay: the coordination already started."),
            400: _VALIDATION,
            409: OpenApiResponse(
                BusySerializer,
                description="`concurrency: reject` and some targets are in another running coordination: nothing "
                "was started.",
            ),
            422: OpenApiResponse(ErrorSerializer, description="The Idempotency-Key was used for another request."),
            **AUTH_ERRORS,
        },
        tags=["deployments"],
    )
    def post(self, request):
        idempotency_key = request.headers.get("Idempotency-Key", "")
        if len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH or not idempotency_key.isprintable():
            raise ValidationError(
                {"Idempotency-Key": [f"must be at most {IDEMPOTENCY_KEY_MAX_LENGTH} printable characters"]}
            )
        serializer = TriggerLocalSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            coordination, created = coordination_start_once(
                idempotency_key=idempotency_key,
                triggered_by=TriggerSource.API,
                user=request.user,
                **serializer.service_arguments(),
            )
        except IdempotencyKeyReused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        except EnvironmentsBusy as exc:
            return Response(BusySerializer.for_busy(exc.busy, exc.message), status=status.HTTP_409_CONFLICT)
        body = TriggerAcceptedSerializer.for_coordination(coordination, context={"request": request})
        if not created:
            return Response(body, status=status.HTTP_200_OK, headers={"Idempotent-Replayed": "true"})
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["status_url"]})


class StatusView(APIView):
    @extend_schema(
        operation_id="deployment_status",
        summary="An overview of what runs and what needs attention, or one coordination",
        description=(
            f"Without `coordination_id`: the oldest {STATUS_ACTIVE_LIMIT} coordinations that have not ended, with "
            f"their progress and the {STATUS_TARGETS_LIMIT} environments of each that need attention most; counts of "
            f"the environments by health; and up to {STATUS_ATTENTION_LIMIT} environments whose last health check "
            "said unhealthy or whose last run failed, with their last outcome. Bounded whatever the fleet's size: "
            "page through the rest with `environments_url` (every environment) and each coordination's "
            f"`environments_url`. With `coordination_id`: that coordination as `coordinations/<id>/` shows it."
        ),
        parameters=[
            OpenApiParameter("coordination_id", str, OpenApiParameter.QUERY, description="Show this one in full.")
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="StatusResponse",
                serializers=[StatusOverviewSerializer, CoordinationDetailSerializer],
                resource_type_field_name=None,
            ),
            404: _NOT_FOUND,
            **AUTH_ERRORS,
        },
        tags=["deployments"],
    )
    def get(self, request):
        context = {"request": request}
        coordination_id = request.query_params.get("coordination_id")
        if coordination_id is not None:
            return _record(request, coordination_id)
        active = coordinations_active()
        attention = environments_needing_attention()
        overview = {
            "active": list(
                coordinations_listed(active, targets_limit=STATUS_TARGETS_LIMIT).order_by("created_at", "id")[
                    :STATUS_ACTIVE_LIMIT
                ]
            ),
            "active_count": active.count(),
            "environment_counts": environment_counts(),
            "environments": environments_with_last_outcome(attention[:STATUS_ATTENTION_LIMIT]),
            "attention_count": attention.count(),
            "environments_url": request.build_absolute_uri(reverse("api:environment-list")),
        }
        return Response(StatusOverviewSerializer(overview, context=context).data)


def _coordination_or_404(coordination_id: str) -> Coordination:
    if not matches(COORDINATION_ID, coordination_id):
        raise Http404("no such coordination")  # no id of this shape can exist
    coordination = coordination_detail(coordination_id, targets_limit=DETAIL_TARGETS_LIMIT)
    if coordination is None:
        raise Http404(f"no coordination {coordination_id!r}")
    return coordination


def _record(request, coordination_id: str) -> Response:
    """A coordination's record, with at most DETAIL_TARGETS_LIMIT of its environments."""
    return Response(
        CoordinationDetailSerializer(_coordination_or_404(coordination_id), context={"request": request}).data
    )


class HistoryView(generics.ListAPIView):
    serializer_class = CoordinationSummarySerializer
    pagination_class = HistoryPagination
    filter_backends = [KnownParametersFilterBackend]
    filterset_class = HistoryFilter

    def get_queryset(self):
        return coordinations_listed(coordinations_finished(), targets_limit=HISTORY_TARGETS_LIMIT)

    @extend_schema(
        operation_id="deployment_history",
        summary="Finished coordinations, newest first",
        description="Paginated by cursor: follow `next`. `?limit=N` as `deployment_history --limit N`.",
        responses={200: CoordinationSummarySerializer(many=True), 400: _VALIDATION, **AUTH_ERRORS},
        tags=["deployments"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class CoordinationDetailView(APIView):
    @extend_schema(
        operation_id="coordination_detail",
        summary="One coordination in full",
        responses={200: CoordinationDetailSerializer, 404: _NOT_FOUND, **AUTH_ERRORS},
        tags=["deployments"],
    )
    def get(self, request, coordination_id: str):
        return _record(request, coordination_id)


class CoordinationEnvironmentsView(generics.ListAPIView):
    serializer_class = TargetListSerializer
    pagination_class = TargetPagination
    filter_backends = [KnownParametersFilterBackend]
    filterset_class = TargetFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the view: no request
            return CoordinationTarget.objects.none()
        coordination = get_object_or_404(
            Coordination.objects.only("id"), coordination_id=self.kwargs["coordination_id"]
        )
        return coordination_targets(coordination)

    @extend_schema(
        operation_id="coordination_environments",
        summary="A coordination's environments, a page at a time",
        description="Each environment's status, reason, exit code, attempts and times, by environment_id "
        "(no output: the coordination's record has the output tails). Follow `next` (a cursor).",
        responses={200: TargetListSerializer(many=True), 400: _VALIDATION, 404: _NOT_FOUND, **AUTH_ERRORS},
        tags=["deployments"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class CoordinationEventsView(APIView):
    @extend_schema(
        operation_id="coordination_events",
        summary="A coordination's events since a cursor",
        description=(
            "Every status change and note, oldest first. Poll with `?after=<next_after>`: each call returns only "
            "what is new. Stop once `finished` is true and `has_more` false."
        ),
        parameters=[
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": EVENTS_MAX_AFTER},
                OpenApiParameter.QUERY,
                description="Only events with a higher id (default 0).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": EVENTS_MAX_LIMIT},
                OpenApiParameter.QUERY,
                description=f"At most this many (default {EVENTS_DEFAULT_LIMIT}).",
            ),
        ],
        responses={200: EventsPageSerializer, 400: _VALIDATION, 404: _NOT_FOUND, **AUTH_ERRORS},
        tags=["deployments"],
    )
    def get(self, request, coordination_id: str):
        after = positive_int_param("after", request.query_params.get("after", "0"), minimum=0, maximum=EVENTS_MAX_AFTER)
        limit = positive_int_param(
            "limit", request.query_params.get("limit", str(EVENTS_DEFAULT_LIMIT)), maximum=EVENTS_MAX_LIMIT
        )
        coordination = get_object_or_404(
            Coordination.objects.only("id", "coordination_id", "status"), coordination_id=coordination_id
        )
        # Read this before the events: when it holds, no event can follow them.
        finished = coordination_finished(coordination)
        events = coordination_events(coordination=coordination, after=after, limit=limit + 1)
        page = events[:limit]
        body = {
            "coordination_id": coordination.coordination_id,
            "coordination_status": coordination.status,
            "finished": finished,
            "events": page,
            "next_after": page[-1].id if page else after,
            "has_more": len(events) > limit,
        }
        return Response(EventsPageSerializer(body, context={"request": request}).data)


class CoordinationCancelView(APIView):
    @extend_schema(
        operation_id="coordination_cancel",
        summary="Cancel a coordination",
        description=(
            "Environments that have not started never will; running ones are hung up within about a second and end "
            "`cancelled`. The answer shows the coordination right after the cancel."
        ),
        request=None,
        responses={200: CoordinationDetailSerializer, 404: _NOT_FOUND, 409: _CONFLICT, **AUTH_ERRORS},
        tags=["deployments"],
    )
    def post(self, request, coordination_id: str):
        coordination = get_object_or_404(Coordination, coordination_id=coordination_id)
        try:
            coordination_cancel(coordination=coordination, user=request.user)
        except CoordinationConflict as exc:
            return _conflict(exc)
        return _record(request, coordination_id)


class CoordinationApproveView(APIView):
    @extend_schema(
        operation_id="coordination_approve",
        summary="Approve the rest of a rollout after its first wave",
        description=(
            "A coordination whose rollout has `pause_after_first_batch: approval` waits in `awaiting_approval` once "
            "its first wave has ended (within the failure budget); approving it runs the rest. The answer shows "
            "the coordination right after the approval (`approved_at`, `approved_by`)."
        ),
        request=None,
        responses={
            200: CoordinationDetailSerializer,
            404: _NOT_FOUND,
            409: OpenApiResponse(ConflictSerializer, description="It is not awaiting approval."),
            **AUTH_ERRORS,
        },
        tags=["deployments"],
    )
    def post(self, request, coordination_id: str):
        coordination = get_object_or_404(Coordination, coordination_id=coordination_id)
        try:
            coordination_approve(coordination=coordination, user=request.user)
        except CoordinationConflict as exc:
            return _conflict(exc)
        return _record(request, coordination_id)


class CoordinationRetryView(APIView):
    @extend_schema(
        operation_id="coordination_retry",
        summary="Retry a coordination's failed environments",
        description=(
            "A new coordination over the environments of this one that failed, were cancelled or were interrupted "
            "and still exist, with the same version and EC2 details; its `retry_of` names this one."
        ),
        request=None,
        responses={
            202: OpenApiResponse(TriggerAcceptedSerializer, description="The retry is queued."),
            400: _VALIDATION,
            404: _NOT_FOUND,
            409: _CONFLICT,
            **AUTH_ERRORS,
        },
        tags=["deployments"],
    )
    def post(self, request, coordination_id: str):
        coordination = get_object_or_404(Coordination, coordination_id=coordination_id)
        try:
            retry = coordination_retry(coordination=coordination, user=request.user)
        except CoordinationConflict as exc:
            return _conflict(exc)
        body = TriggerAcceptedSerializer.for_coordination(retry, context={"request": request})
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["status_url"]})


_PROBE = inline_serializer("HealthProbe", {"ok": serializers.BooleanField(), "detail": serializers.CharField()})
_HEALTH = inline_serializer(
    "PlatformHealth",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "down": serializers.ListField(child=serializers.CharField(), help_text="The parts that are down."),
        "checks": inline_serializer("HealthChecks", {"database": _PROBE, "broker": _PROBE, "worker": _PROBE}),
    },
)


class HealthView(APIView):
    """No authentication and no throttle: load balancers and monitors poll it, and it
    must answer 503 (not fail) when the database behind the throttle's cache is down."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        operation_id="platform_health",
        summary="The platform's own health",
        description="Database reachable, broker reachable, a worker seen within the last minute. No authentication.",
        auth=[],
        responses={200: _HEALTH, 503: _HEALTH},
        tags=["health"],
    )
    def get(self, request):
        probes = platform_health()
        down = [part for part, probe in probes.items() if not probe.ok]
        body = {
            "status": "unavailable" if down else "ok",
            "down": down,
            "checks": {part: {"ok": probe.ok, "detail": probe.detail} for part, probe in probes.items()},
        }
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE if down else status.HTTP_200_OK)


class VersionView(APIView):
    """The API's version, for clients that check they fit (powerautomation-client). No
    authentication and no throttle: it says nothing but the version."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        operation_id="api_version",
        summary="The API's version",
        description="`api_version`: MAJOR.MINOR.PATCH. A client of another major version does not fit.",
        auth=[],
        responses={200: inline_serializer("ApiVersion", {"api_version": serializers.CharField()})},
        tags=["health"],
    )
    def get(self, request):
        return Response({"api_version": settings.API_VERSION})
