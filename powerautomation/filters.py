"""The list endpoints' query filters: django-filter, with a query parameter the list does not
take refused as a 400 naming it, as a body's unknown field is (a typo such as `?helth=` must
not quietly list everything)."""

from django_filters import rest_framework as filters
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings

from powerautomation.api import UNKNOWN_FIELD


class KnownParametersFilterBackend(filters.DjangoFilterBackend):
    """DjangoFilterBackend (a bad value is a 400 naming its filter), and every query
    parameter must be one of the filterset's, the paginator's or DRF's `format`."""

    def filter_queryset(self, request, queryset, view):
        known = {api_settings.URL_FORMAT_OVERRIDE}
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            known |= parameter_names(filterset_class)
        paginator = getattr(view, "paginator", None)
        if paginator is not None and hasattr(paginator, "known_query_params"):
            known |= paginator.known_query_params()
        unknown = sorted(name for name in request.query_params if name not in known)
        if unknown:
            raise ValidationError({name[:40]: [UNKNOWN_FIELD] for name in unknown[:10]})
        return super().filter_queryset(request, queryset, view)


def parameter_names(filterset_class) -> set[str]:
    """The query parameters a filterset reads: a range filter's are `<name>_<suffix>`."""
    names = set()
    for name, filter_ in filterset_class.base_filters.items():
        suffixes = getattr(filter_.field_class.widget, "suffixes", None)
        names |= {f"{name}_{suffix}" for suffix in suffixes} if suffixes else {name}
    return names
