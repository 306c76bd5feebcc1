"""The API's pages: a cursor over a stable, unique ordering, so a page costs the same however
deep it is and a client walking the pages while rows are added neither skips nor repeats
one. `?limit=N` sets the page size; a bad `limit` or `cursor` is a 400 naming it."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class BoundedCursorPagination(CursorPagination):
    """DRF's cursor pagination with `limit` in [1, max_page_size] (else 400 naming it) and an
    unreadable cursor as bad input. Subclasses set `ordering`, `page_size`, `max_page_size`."""

    page_size_query_param = "limit"
    # What the page's items are called, for the schema's description of `limit`.
    items = "items"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.page_size_query_description = f"How many {cls.items} (1-{cls.max_page_size}, default {cls.page_size})."

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
        return positive_int_param(self.page_size_query_param, raw, maximum=self.max_page_size)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
            elif parameter["name"] == self.cursor_query_param:
                parameter["description"] = "Where the page starts: take it from a `next` or `previous` link."
        return parameters

    def known_query_params(self) -> set[str]:
        """The query parameters the pages take."""
        return {self.cursor_query_param, self.page_size_query_param}


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
