"""GET /api/deployment/coordinations/<id>/environments/<env>/output: one environment's whole
script output, as plain text (or JSON with `Accept: application/json` / `?format=json`),
followable by byte offset while the script runs. VIEWERs may read it: secrets were masked
before it was stored (deployments/script_output.py)."""

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import renderers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from deployments.api.pagination import positive_int_param
from deployments.api.serializers import ErrorSerializer
from deployments.api.views import AUTH_ERRORS
from deployments.script_output import OutputSlice, output_read
from deployments.selectors import coordination_target

MAX_OFFSET = 2**53
# Headers that carry the JSON answer's figures with the plain text.
HEADERS = {
    "X-Output-Offset": "offset",
    "X-Output-Next-Offset": "next_offset",
    "X-Output-Length": "length",
    "X-Output-Dropped-Bytes": "dropped_bytes",
    "X-Output-Complete": "complete",
}


class PlainTextRenderer(renderers.BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return data["text"].encode("utf-8")


OUTPUT_ANSWER = inline_serializer(
    "ScriptOutput",
    {
        "coordination_id": serializers.CharField(),
        "environment_id": serializers.CharField(),
        "offset": serializers.IntegerField(help_text="Byte offset of `text` in the whole output."),
        "next_offset": serializers.IntegerField(help_text="Ask with ?offset= this for what follows."),
        "length": serializers.IntegerField(help_text="Bytes of output so far."),
        "dropped_bytes": serializers.IntegerField(help_text="Bytes of the middle dropped past the cap."),
        "complete": serializers.BooleanField(help_text="The run has ended: no more output will come."),
        "text": serializers.CharField(),
    },
)


class CoordinationOutputView(APIView):
    renderer_classes = [PlainTextRenderer, renderers.JSONRenderer]

    def handle_exception(self, exc):
        # An error is JSON whatever was asked for (the schema says so; a client parses it).
        response = super().handle_exception(exc)
        self.request.accepted_renderer = renderers.JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return response

    @extend_schema(
        operation_id="coordination_environment_output",
        summary="One environment's script output",
        description=(
            "Plain text by default (the figures in `X-Output-*` headers), JSON with `Accept: application/json` or "
            "`?format=json`. Past DEPLOYMENT_OUTPUT_MAX_BYTES the first and last halves are kept with one line "
            "`[... N bytes dropped ...]` between them. Follow a running script with `?offset=<next_offset>` until "
            "`complete`. `?download=1` answers as a file."
        ),
        parameters=[
            OpenApiParameter(
                "offset",
                {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                OpenApiParameter.QUERY,
                description="Bytes to skip (default 0).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1},
                OpenApiParameter.QUERY,
                description="At most this many bytes.",
            ),
            OpenApiParameter("download", OpenApiTypes.BOOL, OpenApiParameter.QUERY, description="As a file."),
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="The output."),
            (200, "application/json"): OUTPUT_ANSWER,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="A bad offset or limit."),
            404: OpenApiResponse(ErrorSerializer, description="No such environment run."),
            **AUTH_ERRORS,
        },
        tags=["deployments"],
    )
    def get(self, request, coordination_id: str, environment_id: str) -> HttpResponse:
        params = request.query_params
        offset = positive_int_param("offset", params.get("offset", "0"), minimum=0, maximum=MAX_OFFSET)
        limit = None
        if "limit" in params:
            limit = positive_int_param("limit", params["limit"], maximum=settings.DEPLOYMENT_OUTPUT_MAX_BYTES)
        target = coordination_target(coordination_id=coordination_id, environment_id=environment_id)
        body = answer(coordination_id, environment_id, output_read(target, offset=offset, limit=limit))
        response: HttpResponse
        if isinstance(request.accepted_renderer, PlainTextRenderer):
            # Not DRF's Response: it drops the Content-Type of an empty body.
            response = HttpResponse(body["text"], content_type="text/plain; charset=utf-8")
        else:
            response = Response(body)
        for header, key in HEADERS.items():
            response[header] = str(body[key]).lower() if key == "complete" else str(body[key])
        if params.get("download") in ("1", "true"):
            name = f"{coordination_id}-{environment_id}.log".replace('"', "")
            response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response


def answer(coordination_id: str, environment_id: str, piece: OutputSlice) -> dict:
    return {
        "coordination_id": coordination_id,
        "environment_id": environment_id,
        "offset": piece.offset,
        "next_offset": piece.next_offset,
        "length": piece.length,
        "dropped_bytes": piece.dropped,
        "complete": piece.complete,
        "text": piece.text,
    }
