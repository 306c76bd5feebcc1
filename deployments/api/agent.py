"""/api/agent/: what a polling agent calls (agent/powerautomation_agent.py --poll).

Its own authentication: `Authorization: Bearer <agent token>`, bound to one environment
(the platform keeps only the token's hash). No user, no session, no role: an agent can
only ask for its own environment's work and report on the run it took. Wrong token, or
another environment's: 401, nothing claimed. Views only translate HTTP; the rules are
in deployments/agent_runs.py.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.fields import ProhibitNullCharactersValidator
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from deployments.agent_runs import (
    OUTPUT_CHUNK_BYTES,
    OffsetAhead,
    agent_poll_lookup,
    agent_run_claim,
    agent_run_finish,
    agent_run_for,
    agent_run_heartbeat,
    agent_run_output,
    run_description,
    stop_reason,
)
from deployments.models import CoordinationTarget
from environments.http_answers import ANSWER_BYTES
from environments.models import ConnectionMethod
from powerautomation.api import RejectUnknownFieldsMixin

EXIT_CODE_MIN, EXIT_CODE_MAX = -(2**31), 2**31 - 1
MAX_OFFSET = 2**53
TOKEN_REFUSED = "agent token refused: it is not this environment's (check --token-file and --environment-id)"  # noqa: S105


def bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def refused() -> Response:
    return Response(
        {"detail": TOKEN_REFUSED}, status=status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"}
    )


class JSONInteger(serializers.IntegerField):
    """An integer in JSON: "0", 1.0 or true are refused, not turned into one."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONString(serializers.CharField):
    """A string in JSON: 5 is refused, not turned into "5"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class OutputText(JSONString):
    """Script output: anything a script prints, NUL characters too (the store replaces
    them; refusing them would leave the agent resending the same piece forever)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]


class PollSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    environment_id = JSONString(max_length=100)
    agent_version = JSONString(max_length=100, required=False, allow_blank=True)
    hostname = JSONString(max_length=100, required=False, allow_blank=True)


class OutputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    offset = JSONInteger(min_value=0, max_value=MAX_OFFSET)
    text = OutputText(allow_blank=True, trim_whitespace=False)

    def validate_text(self, value: str) -> str:
        if len(value.encode("utf-8", errors="surrogatepass")) > OUTPUT_CHUNK_BYTES:
            raise serializers.ValidationError(f"at most {OUTPUT_CHUNK_BYTES} bytes (UTF-8) per request")
        return value.encode("utf-8", errors="replace").decode("utf-8")


class ResultSerializer(OutputSerializer):
    """The exit code, with the last output in the same request (`text`, optional): a short
    script's whole run is one poll and one request."""

    exit_code = JSONInteger(min_value=EXIT_CODE_MIN, max_value=EXIT_CODE_MAX)
    text = OutputText(allow_blank=True, trim_whitespace=False, required=False, default="")


class HeartbeatSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    pass


_ERROR = inline_serializer("AgentError", {"detail": serializers.CharField()})
_GAP = inline_serializer("AgentOffsetGap", {"detail": serializers.CharField(), "offset": serializers.IntegerField()})
# What every agent endpoint may answer besides its own 200.
_AGENT_ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid body: each field's problems."),
    401: OpenApiResponse(_ERROR, description="Agent token missing, wrong, or another environment's."),
}
_RUN_ERRORS = {**_AGENT_ERRORS, 404: OpenApiResponse(_ERROR, description="No such run for this environment.")}
AUTH = [{"agentToken": []}]

RUN_ANSWER = inline_serializer(
    "AgentRunAnswer",
    {"offset": serializers.IntegerField(), "stop": serializers.BooleanField(), "stop_reason": serializers.CharField()},
)


class AgentView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # an idle poll costs one query; the token gates everything
    max_body_bytes = ANSWER_BYTES


class PollView(AgentView):
    @extend_schema(
        tags=["agent"],
        auth=AUTH,
        request=PollSerializer,
        responses={
            200: inline_serializer(
                "AgentPoll",
                {"poll_interval": serializers.IntegerField(), "run": serializers.DictField(allow_null=True)},
            ),
            409: OpenApiResponse(_ERROR, description="The environment does not use the polling method."),
            **_AGENT_ERRORS,
        },
        summary="A polling agent asks for work; claims at most one run",
    )
    def post(self, request: Request) -> Response:
        token = bearer_token(request)
        body = PollSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        poll = agent_poll_lookup(token) if token else None
        if poll is None or poll.environment_id != body.validated_data["environment_id"]:
            return refused()
        if poll.connection_method != ConnectionMethod.POLLING:
            return Response(
                {"detail": f"environment {poll.environment_id} uses {poll.connection_method}, not polling"},
                status=status.HTTP_409_CONFLICT,
            )
        run = None
        if poll.offered_target_pk is not None:
            # Said by the machine, shown in an event: printable characters only.
            said = (body.validated_data.get("hostname"), body.validated_data.get("agent_version"))
            agent = "".join(ch for ch in " ".join(value for value in said if value) if ch.isprintable())
            target = agent_run_claim(poll.offered_target_pk, agent=agent)
            run = run_description(target) if target is not None else None
        return Response({"poll_interval": poll.poll_interval, "run": run})


class RunView(AgentView):
    """A request about the run this agent took."""

    def run_or_answer(self, request: Request, run_id: str) -> CoordinationTarget | Response:
        token = bearer_token(request)
        known, target = agent_run_for(token, run_id) if token else (False, None)
        if not known:
            return refused()
        if target is None:
            return Response({"detail": "no such run for this environment"}, status=status.HTTP_404_NOT_FOUND)
        return target

    @staticmethod
    def answer(target: CoordinationTarget) -> Response:
        why = stop_reason(target)
        return Response({"offset": target.output_bytes, "stop": bool(why), "stop_reason": why})


class HeartbeatView(RunView):
    @extend_schema(
        tags=["agent"],
        auth=AUTH,
        request=HeartbeatSerializer,
        responses={200: RUN_ANSWER, **_RUN_ERRORS},
        summary="The agent is alive",
    )
    def post(self, request: Request, run_id: str) -> Response:
        target = self.run_or_answer(request, run_id)
        if isinstance(target, Response):
            return target
        HeartbeatSerializer(data=request.data or {}).is_valid(raise_exception=True)
        agent_run_heartbeat(target)
        return self.answer(target)


class OutputView(RunView):
    # JSON escaping of the largest chunk (control characters: 6 bytes each).
    max_body_bytes = 6 * OUTPUT_CHUNK_BYTES + 1024

    @extend_schema(
        tags=["agent"],
        auth=AUTH,
        request=OutputSerializer,
        responses={200: RUN_ANSWER, 409: _GAP, **_RUN_ERRORS},
        summary="Output, resumable by offset",
    )
    def post(self, request: Request, run_id: str) -> Response:
        target = self.run_or_answer(request, run_id)
        if isinstance(target, Response):
            return target
        body = OutputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            agent_run_output(
                target,
                offset=body.validated_data["offset"],
                text=body.validated_data["text"],
                agent_token=bearer_token(request),
            )
        except OffsetAhead as gap:
            return Response({"detail": str(gap), "offset": gap.held}, status=status.HTTP_409_CONFLICT)
        agent_run_heartbeat(target)
        return self.answer(target)


class ResultView(RunView):
    max_body_bytes = OutputView.max_body_bytes

    @extend_schema(
        tags=["agent"],
        auth=AUTH,
        request=ResultSerializer,
        responses={
            200: inline_serializer(
                "AgentResult", {"recorded": serializers.BooleanField(), "status": serializers.CharField()}
            ),
            409: _GAP,
            **_RUN_ERRORS,
        },
        summary="The script's exit code, after all its output",
    )
    def post(self, request: Request, run_id: str) -> Response:
        target = self.run_or_answer(request, run_id)
        if isinstance(target, Response):
            return target
        body = ResultSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        offset, text = body.validated_data["offset"], body.validated_data["text"]
        try:
            if text:
                agent_run_output(target, offset=offset, text=text, agent_token=bearer_token(request))
                offset += len(text.encode("utf-8"))
            recorded = agent_run_finish(target, exit_code=body.validated_data["exit_code"], offset=offset)
        except OffsetAhead as gap:
            return Response({"detail": str(gap), "offset": gap.held}, status=status.HTTP_409_CONFLICT)
        return Response({"recorded": recorded, "status": target.status})
