"""Template helpers of the admin's deployment pages: the dashboard and the badges."""

from django import template

from deployments import dashboard
from deployments.admin_views import DeployForm

register = template.Library()


@register.inclusion_tag("admin/deployments/dashboard/dashboard.html", takes_context=True)
def deployment_dashboard(context):
    """The dashboard at the top of the admin's front page (nothing for a user without a
    role). The Deploy form only for ADMIN."""
    from accounts.admin_roles import can_view

    request = context["request"]
    if not can_view(request):
        return {"visible": False}
    values = dashboard.dashboard_context(request)
    if values["can_operate"]:
        values["deploy_form"] = DeployForm(
            initial={"all_environments": True}, environments=values["enabled_environments"]
        )
    return {**values, "visible": True, "request": request, "csrf_token": context.get("csrf_token")}


@register.filter
def coordination_badge(status: str):
    return dashboard.coordination_badge(status)


@register.filter
def target_badge(status: str, reason: str = ""):
    return dashboard.target_badge(status, reason)


@register.filter
def health_badge(health: str, title: str = ""):
    return dashboard.health_badge(health, title)


@register.filter
def progress_bar(progress: dict):
    return dashboard.progress_bar(progress)


@register.filter
def progress_summary(progress: dict) -> str:
    return dashboard.progress_summary(progress)


@register.filter
def duration(seconds) -> str:
    return dashboard.format_duration(seconds)
