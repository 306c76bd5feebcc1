"""How API request bodies are read. Its own module: DRF's APIView loads the parser
classes from settings while `rest_framework.views` is being imported, so this module must
not import that (powerautomation.api does)."""

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from powerautomation import json_input


def body_limit_message(limit: int) -> str:
    return f"The request body is larger than {limit} bytes, the limit for this endpoint."


class BoundedJSONParser(BaseParser):
    """Every API body is read through this: at most `max_body_bytes` of the view (default
    DATA_UPLOAD_MAX_MEMORY_SIZE), then parsed by the project's bounded JSON reader (depth,
    duplicate keys, NaN), each refusal a 400 saying what is wrong. Not a JSONParser
    subclass: DRF hands those `request.body`, which Django caps at
    DATA_UPLOAD_MAX_MEMORY_SIZE whatever the view allows."""

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        view = (parser_context or {}).get("view")
        limit = getattr(view, "max_body_bytes", None) or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ParseError(body_limit_message(limit))
        try:
            return json_input.loads(raw)
        except json_input.JSONInputError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
