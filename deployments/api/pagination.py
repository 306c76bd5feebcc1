"""History pages: a cursor over (created_at, id), newest first, so a page costs the
same however deep it is (index `coordination_recent`). `?limit=N` as the CLI has it."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

HISTORY_DEFAULT_LIMIT = 10
HISTORY_MAX_LIMIT = 500


class HistoryPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = HISTORY_DEFAULT_LIMIT
    page_size_query_param = "limit"
    page_size_query_description = f"How many coordinations (1-{HISTORY_MAX_LIMIT}, default {HISTORY_DEFAULT_LIMIT})."
    max_page_size = HISTORY_MAX_LIMIT

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF's answer to a cursor it cannot read; it is bad input
            raise ValidationError(
                {self.cursor_query_param: ["invalid cursor: use the next or previous link"]}
            ) from None

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        return positive_int_param("limit", raw, maximum=self.max_page_size)


def positive_int_param(name: str, raw: str, *, maximum: int, minimum: int = 1) -> int:
    """A query parameter that must be a whole number in [minimum, maximum]; else 400
    naming it."""
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"must be a whole number, not {raw[:40]!r}"]}) from None
    if not minimum <= value <= maximum:
        raise ValidationError({name: [f"must be between {minimum} and {maximum}"]})
    return value
