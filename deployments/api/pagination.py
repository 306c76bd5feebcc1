"""The deployment lists' pages (powerautomation/pagination.py: a cursor, `?limit=N`)."""

from powerautomation.pagination import BoundedCursorPagination, positive_int_param

__all__ = ["HistoryPagination", "TargetPagination", "positive_int_param"]

HISTORY_DEFAULT_LIMIT = 10
HISTORY_MAX_LIMIT = 500


class HistoryPagination(BoundedCursorPagination):
    """Newest first, over (created_at, id) (index `coordination_recent`). `?limit=N` as the CLI has it."""

    ordering = ("-created_at", "-id")
    page_size = HISTORY_DEFAULT_LIMIT
    max_page_size = HISTORY_MAX_LIMIT
    items = "coordinations"


class TargetPagination(BoundedCursorPagination):
    """A coordination's environments by id (unique within it)."""

    ordering = ("environment_id",)
    page_size = 100
    max_page_size = 1000
    items = "environments"
