from django.contrib import admin

from deployments.models import Coordination, CoordinationTarget, StageEvent


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class CoordinationTargetInline(ReadOnlyInline):
    model = CoordinationTarget
    fields = ("environment_id", "status", "reason", "exit_code", "attempts", "started_at", "finished_at", "error")
    readonly_fields = fields


class StageEventInline(ReadOnlyInline):
    model = StageEvent
    fields = ("created_at", "environment_id", "stage", "old_status", "new_status", "message")
    readonly_fields = fields


@admin.register(Coordination)
class CoordinationAdmin(admin.ModelAdmin):
    """Status is never edited by hand: everything here is read-only."""

    list_display = ("coordination_id", "status", "version", "triggered_by", "created_at", "finished_at")
    list_filter = ("status", "triggered_by")
    search_fields = ("coordination_id", "version", "ec2_instance_id")
    list_select_related = ("triggered_by_user",)
    inlines = [CoordinationTargetInline, StageEventInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(StageEvent)
class StageEventAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "coordination",
        "environment_id",
        "stage",
        "old_status",
        "new_status",
        "message",
        "created_at",
    )
    list_filter = ("stage",)
    search_fields = ("coordination__coordination_id", "environment_id", "message")
    list_select_related = ("coordination",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
