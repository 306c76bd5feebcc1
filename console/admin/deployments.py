"""Coordinations in the admin (status never edited by hand; approve, cancel and retry
call services), their StageEvents and the auto-deploy claims. Who may do what follows the roles
(accounts/admin_roles.py)."""

import json

from django.contrib import admin, messages
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.admin_roles import RecordAdmin, can_operate
from console.coordination_page import coordination_page_context
from console.presenters import (
    coordination_badge,
    coordination_url,
    format_duration,
    progress_bar,
    progress_summary,
    triggered_by_label,
)
from console.views import deployments as views
from deployments.models import AutoDeploy, Coordination, StageEvent
from deployments.redaction import ec2_config_shown, event_data_shown
from deployments.selectors import annotated_progress, coordinations_with_progress
from deployments.services import CoordinationConflict, coordination_cancel
from deployments.stage_log import format_event

# What a VIEWER's page shows instead of a field that may carry what only ADMINs see
# (deployments/redaction.py).
VIEWER_FIELDS = {"ec2_deployment_config": "ec2_config_shown", "data": "data_shown"}


def shown_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(Coordination)
class CoordinationAdmin(RecordAdmin):
    list_display = (
        "coordination_id",
        "status_badge",
        "progress_display",
        "duration",
        "triggered",
        "version",
        "created_at",
    )
    list_filter = ("status", "triggered_by", "created_at")
    search_fields = ("coordination_id", "version", "ec2_instance_id", "targets__environment_id")
    list_select_related = ("triggered_by_user",)
    actions = ("cancel_selected", "retry_selected")
    change_form_template = "admin/deployments/coordination/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "coordination_id",
                    "status_badge",
                    "triggered",
                    "version",
                    "duration",
                    "error",
                    "retry_of_link",
                    "retries_links",
                )
            },
        ),
        ("EC2 platform", {"fields": ("ec2_instance_id", "ec2_public_ip", "ec2_deployment_config")}),
        ("Times", {"fields": ("created_at", "started_at", "finished_at")}),
        ("Settings this run used", {"classes": ("collapse",), "fields": ("settings",)}),
    )
    # Everything shown is read-only: a coordination changes only through its services.
    readonly_fields = (*(name for _, options in fieldsets for name in options["fields"]), "ec2_config_shown")

    def get_fieldsets(self, request, obj=None):
        if can_operate(request):
            return self.fieldsets
        # A VIEWER sees user_data only as "set (N bytes)".
        return tuple(
            (title, {**options, "fields": tuple(VIEWER_FIELDS.get(name, name) for name in options["fields"])})
            for title, options in self.fieldsets
        )

    def get_queryset(self, request):
        return coordinations_with_progress(super().get_queryset(request))

    def get_urls(self):
        wrap = self.admin_view_of
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("deploy/", wrap(views.deploy_view), name=f"{name}_deploy"),
            path("deploy/selection/", wrap(views.deploy_selection_view), name=f"{name}_deploy_selection"),
            path("dashboard/live/", wrap(views.dashboard_live_view), name=f"{name}_dashboard_live"),
            path("<int:pk>/live/", wrap(views.coordination_live_view), name=f"{name}_live"),
            path("<int:pk>/approve/", wrap(views.coordination_approve_view), name=f"{name}_approve"),
            path("<int:pk>/cancel/", wrap(views.coordination_cancel_view), name=f"{name}_cancel"),
            path("<int:pk>/retry/", wrap(views.coordination_retry_view), name=f"{name}_retry"),
            path("<int:pk>/output/<str:environment_id>/", wrap(views.coordination_output_view), name=f"{name}_output"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        coordination = self.get_object(request, object_id)
        if coordination is not None:
            extra_context = {**(extra_context or {}), **coordination_page_context(request, coordination)}
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_operate": self.has_operate_permission(request)}
        return super().changelist_view(request, extra_context)

    # --- columns and fields ---------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return coordination_badge(obj.status)

    @admin.display(description="progress")
    def progress_display(self, obj):
        progress = annotated_progress(obj)
        return format_html(
            '<div class="pa-progress-cell" title="{}">{}<span class="pa-progress-text">{}</span></div>',
            progress_summary(progress),
            progress_bar(progress),
            progress_summary(progress),
        )

    @admin.display(description="duration")
    def duration(self, obj):
        return format_duration(obj.duration_seconds)

    @admin.display(description="triggered by", ordering="triggered_by")
    def triggered(self, obj):
        return triggered_by_label(obj)

    @admin.display(description="EC2 deployment config")
    def ec2_config_shown(self, obj):
        return shown_json(ec2_config_shown(obj.ec2_deployment_config, admin=False))

    @admin.display(description="retry of")
    def retry_of_link(self, obj):
        if obj.retry_of_id is None:
            return "–"
        retry_of = obj.retry_of
        return format_html('<a href="{}">{}</a>', coordination_url(retry_of), retry_of.coordination_id)

    @admin.display(description="retried as")
    def retries_links(self, obj):
        retries = list(obj.retries.order_by("created_at"))
        if not retries:
            return "–"
        return format_html(
            ", ".join(['<a href="{}">{}</a>'] * len(retries)),
            *[part for retry in retries for part in (coordination_url(retry), retry.coordination_id)],
        )

    # --- actions: each calls a service ----------------------------------------------------

    @admin.action(description="Cancel the selected coordinations", permissions=["operate"])
    def cancel_selected(self, request, queryset):
        for coordination in queryset:
            try:
                coordination_cancel(coordination=coordination, user=request.user)
            except CoordinationConflict as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.log_change(request, coordination, "Cancelled from the admin.")
                self.message_user(request, f"Cancelled {coordination.coordination_id}.", messages.SUCCESS)

    @admin.action(description="Retry the failed environments of the selected coordinations", permissions=["operate"])
    def retry_selected(self, request, queryset):
        for coordination in queryset:
            retry, problem = views.retry_coordination(self, request, coordination)
            if retry is None:
                self.message_user(request, problem, messages.WARNING)


@admin.register(StageEvent)
class StageEventAdmin(RecordAdmin):
    """Append-only: every status change and note of every coordination."""

    list_display = ("id", "created_at", "coordination_link", "environment_id", "stage", "transition", "message")
    list_filter = ("stage", "new_status")
    search_fields = ("coordination__coordination_id", "environment_id", "message")
    list_select_related = ("coordination",)
    show_full_result_count = False
    fields = (
        "coordination",
        "environment_id",
        "stage",
        "old_status",
        "new_status",
        "line",
        "message",
        "data",
        "created_at",
    )
    readonly_fields = (*fields, "data_shown")

    def get_fields(self, request, obj=None):
        if can_operate(request):
            return self.fields
        return tuple(VIEWER_FIELDS.get(name, name) for name in self.fields)

    @admin.display(description="data")
    def data_shown(self, obj):
        return shown_json(event_data_shown(obj.data, admin=False))

    @admin.display(description="coordination", ordering="coordination__coordination_id")
    def coordination_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:deployments_coordination_change", args=[obj.coordination_id]),
            obj.coordination.coordination_id,
        )

    @admin.display(description="change")
    def transition(self, obj):
        if not obj.new_status:
            return "note"
        return f"{obj.old_status or '–'} → {obj.new_status}"

    @admin.display(description="stage log")
    def line(self, obj):
        return format_event(obj)


@admin.register(AutoDeploy)
class AutoDeployAdmin(RecordAdmin):
    """Which version the platform's start deployed (AUTO_DEPLOY_ON_STARTUP), and by which
    process: the claim that keeps a version from being deployed twice."""

    list_display = ("version", "coordination_link", "claimed_by", "created_at")
    search_fields = ("version", "coordination__coordination_id")
    list_select_related = ("coordination",)
    fields = ("version", "coordination_link", "claimed_by", "created_at")
    readonly_fields = fields

    @admin.display(description="coordination")
    def coordination_link(self, obj):
        if obj.coordination is None:
            return "–"
        return format_html('<a href="{}">{}</a>', coordination_url(obj.coordination), obj.coordination.coordination_id)
