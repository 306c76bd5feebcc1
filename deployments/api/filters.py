"""Query filters of the list endpoints."""

from django.db.models import Exists, OuterRef
from django_filters import rest_framework as filters

from deployments.models import COORDINATION_TERMINAL, Coordination, CoordinationTarget, TargetStatus

COORDINATION_OUTCOME_CHOICES = [(value, value) for value in sorted(COORDINATION_TERMINAL)]


class HistoryFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(
        choices=COORDINATION_OUTCOME_CHOICES,
        help_text="Only these outcomes (repeat the parameter for several).",
    )
    environment = filters.CharFilter(method="filter_environment", help_text="Only runs that included this environment.")
    version = filters.CharFilter(help_text="Only runs of this deployment version.")
    created = filters.IsoDateTimeFromToRangeFilter(
        field_name="created_at", help_text="created_after / created_before: ISO 8601 times, both inclusive."
    )

    class Meta:
        model = Coordination
        fields = ("status", "environment", "version", "created")

    def filter_environment(self, queryset, name, value):
        # EXISTS rather than a join, so the target list of each row stays whole.
        targets = CoordinationTarget.objects.filter(coordination=OuterRef("pk"), environment_id=value)
        return queryset.filter(Exists(targets))


class TargetFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(
        choices=TargetStatus.choices, help_text="Only environments in these states (repeat the parameter for several)."
    )

    class Meta:
        model = CoordinationTarget
        fields = ("status",)
