"""The agents' callback: how an http_api/webhook environment reports its run's end."""

import json

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from deployments.models import CallbackToken

MAX_CALLBACK_BYTES = 1024 * 1024


class BadBody(ValueError):
    """A callback body that is not one flat JSON object; the message says why."""


def _bad_request(field: str, problem: str) -> JsonResponse:
    return JsonResponse({field: [problem]}, status=400)


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    data: dict = {}
    for key, value in pairs:
        if key in data:
            raise BadBody(f"duplicate key {key[:50]!r}")
        data[key] = value
    return data


def _parse(body: bytes) -> object:
    """JSON, refusing what a hostile sender might try: not UTF-8, duplicate keys (which
    value counts would depend on the parser), and nesting deep enough to exhaust the stack."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody("the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise BadBody("the body must be UTF-8 JSON") from None
    except ValueError:
        raise BadBody("the body must be JSON") from None


def _validate(body: bytes) -> tuple[dict | None, JsonResponse | None]:
    try:
        data = _parse(body)
    except BadBody as exc:
        return None, _bad_request("non_field_errors", str(exc))
    if not isinstance(data, dict):
        return None, _bad_request("non_field_errors", 'the body must be an object {"success", "exit_code", "output"}')
    if not isinstance(data.get("success"), bool):
        return None, _bad_request("success", "required: true or false")
    exit_code = data.get("exit_code")
    if exit_code is None:
        exit_code = 0 if data["success"] else 1
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not -(2**31) <= exit_code < 2**31:
        return None, _bad_request("exit_code", "must be a whole number")
    output = data.get("output", "")
    if not isinstance(output, str):
        return None, _bad_request("output", "must be a string")
    # Kept whole (the body is at most MAX_CALLBACK_BYTES): the run's output store applies the cap.
    return {"success": data["success"], "exit_code": exit_code, "output": output}, None


def _read_body(request: HttpRequest) -> bytes | None:
    """The body, or None when it is larger than MAX_CALLBACK_BYTES (judged by its
    Content-Length first, so a huge body is never read)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_CALLBACK_BYTES:
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return None
    return body if len(body) <= MAX_CALLBACK_BYTES else None


@csrf_exempt
@require_POST
def callback(request: HttpRequest, token: str) -> JsonResponse:
    """Record an agent's result. The token is the only credential: single-use, bound to
    one target, ending with it (or its timeout). Unknown, used, expired or ended: 404,
    before the body is even read, and nothing changes. A bad body: 400 naming the
    problem, and the token stays usable (the agent may send a correct one)."""
    live = CallbackToken.objects.filter(
        token_hash=CallbackToken.hash_of(token), used_at__isnull=True, expires_at__gt=timezone.now()
    )
    if not live.exists():
        return JsonResponse({"detail": "not found"}, status=404)
    body = _read_body(request)
    if body is None:
        return _bad_request("non_field_errors", f"the body is too large (at most {MAX_CALLBACK_BYTES} bytes)")
    result, error = _validate(body)
    if error is not None:
        return error
    now = timezone.now()
    recorded = live.filter(expires_at__gt=now).update(used_at=now, result=result)
    if not recorded:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse({"accepted": True})
