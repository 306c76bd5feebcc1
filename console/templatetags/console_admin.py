"""Template helpers of the console's pages: the dashboard and the badges."""

from django import template

from accounts.admin_roles import can_view
from console import dashboard, presenters
from console.views.deployments import deploy_form, enabled_environments

register = template.Library()


@register.inclusion_tag("admin/deployments/dashboard/dashboard.html", takes_context=True)
def deployment_dashboard(context):
    """The dashboard at the top of the admin's front page (nothing for a user without a
    role). The Deploy form only for ADMIN."""
    request = context["request"]
    if not can_view(request):
        return {"visible": False}
    values = dashboard.dashboard_context(request)
    if values["can_operate"]:
        enabled = values["overview"].enabled
        if enabled <= dashboard.DEPLOY_CHOICES_SHOWN:
            form = deploy_form(initial={"all_environments": True}, environments=enabled_environments())
        else:  # at fleet size: all, or by tag; single ones on the Deploy page
            form = deploy_form(initial={"all_environments": True}, environments=[], enabled_count=enabled)
            values["deploy_choices_collapsed"] = True
        values["deploy_form"] = form
    return {**values, "visible": True, "request": request, "csrf_token": context.get("csrf_token")}


@register.filter
def coordination_badge(status: str):
    return presenters.coordination_badge(status)


@register.filter
def target_badge(status: str, reason: str = ""):
    return presenters.target_badge(status, reason)


@register.filter
def health_badge(health: str, title: str = ""):
    return presenters.health_badge(health, title)


@register.filter
def progress_bar(progress: dict):
    return presenters.progress_bar(progress)


@register.filter
def progress_summary(progress: dict) -> str:
    return presenters.progress_summary(progress)


@register.filter
def duration(seconds) -> str:
    return presenters.format_duration(seconds)
