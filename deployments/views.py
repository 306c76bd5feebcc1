"""The agents' callback: how an http_api/webhook environment reports its run's end."""

import json

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from deployments.models import CallbackToken

MAX_CALLBACK_BYTES = 1024 * 1024


def _bad_request(field: str, problem: str) -> JsonResponse:
    return JsonResponse({field: [problem]}, status=400)


def _validate(body: bytes) -> tuple[dict | None, JsonResponse | None]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, _bad_request("non_field_errors", "the body must be JSON")
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
    limit = settings.DEPLOYMENT_OUTPUT_TAIL_BYTES
    output = output.encode("utf-8")[-limit:].decode("utf-8", errors="ignore")
    return {"success": data["success"], "exit_code": exit_code, "output": output}, None


@csrf_exempt
@require_POST
def callback(request: HttpRequest, token: str) -> JsonResponse:
    """Record an agent's result. The token is the only credential: single-use, bound to
    one target, expiring with its timeout. Unknown, used or expired: 404, nothing changes.
    A bad body: 400, and the token stays usable."""
    if len(request.body) > MAX_CALLBACK_BYTES:
        return _bad_request("non_field_errors", "the body is too large")
    token_hash = CallbackToken.hash_of(token)
    result, error = _validate(request.body)
    if error is not None:
        if not CallbackToken.objects.filter(token_hash=token_hash, used_at__isnull=True).exists():
            return JsonResponse({"detail": "not found"}, status=404)
        return error
    now = timezone.now()
    recorded = CallbackToken.objects.filter(token_hash=token_hash, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now, result=result
    )
    if not recorded:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse({"accepted": True})
