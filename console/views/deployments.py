"""The admin's own deployment pages, hung off the coordination admin's URLs: the Deploy
form, the dashboard's and a coordination page's live JSON, cancel and retry. Each write
calls one service; each checks the role first (accounts/admin_roles.py)."""

import re

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts.admin_roles import require_operator, require_viewer
from console.coordination_page import coordination_live
from console.dashboard import dashboard_live
from console.presenters import coordination_url
from deployments.models import Coordination, TriggerSource
from deployments.services import CoordinationConflict, coordination_cancel, coordination_retry, coordination_start
from environments.models import RemoteEnvironment
from environments.selectors import environments_enabled, environments_for_deployment
from environments.tags import split_tags

MAX_AFTER = 2**62
# A line of comma-separated tags: room for many labels, still bounded.
TAGS_INPUT_MAX_LENGTH = 2000


class DeployForm(forms.Form):
    """What `trigger_local` asks for: which environments (all enabled ones, or those
    ticked and those with any of the tags, less those with any of the excluded tags), the
    version, and the EC2 platform deploy this follows."""

    all_environments = forms.BooleanField(required=False, initial=True, label="All enabled environments")
    environments = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    tags = forms.CharField(
        required=False,
        max_length=TAGS_INPUT_MAX_LENGTH,
        widget=forms.TextInput(attrs={"placeholder": "mac, linux"}),
        help_text="and every enabled environment with any of these tags (comma-separated)",
    )
    exclude_tags = forms.CharField(
        required=False,
        max_length=TAGS_INPUT_MAX_LENGTH,
        label="Exclude tags",
        widget=forms.TextInput(attrs={"placeholder": "flaky"}),
        help_text="leave out every environment with any of these, ticked ones too",
    )
    version = forms.CharField(
        required=False, max_length=100, widget=forms.TextInput(attrs={"placeholder": "v1.0.0", "size": 14})
    )
    ec2_instance_id = forms.CharField(
        required=False,
        max_length=64,
        label="EC2 instance id",
        widget=forms.TextInput(attrs={"placeholder": "i-0123456789abcdef0", "size": 20}),
    )
    ec2_public_ip = forms.CharField(
        required=False,
        max_length=64,
        label="EC2 public IP",
        widget=forms.TextInput(attrs={"placeholder": "203.0.113.10", "size": 14}),
    )

    def __init__(self, *args, environments: list[RemoteEnvironment], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environments"].choices = [
            (environment.environment_id, _choice_label(environment)) for environment in environments
        ]
        self.fields["all_environments"].label = f"All enabled environments ({len(environments)})"

    def clean(self):
        data = super().clean()
        chosen = data.get("environments") or split_tags(data.get("tags") or "")
        if not data.get("all_environments") and not chosen:
            raise ValidationError("Choose the environments to deploy to, or tick all enabled environments.")
        return data

    def selection_arguments(self) -> dict:
        """Which environments, as `environments_for_deployment` takes them. Tags are a
        choice of their own: given, "all enabled" no longer applies (the page's script
        unticks it as they are typed)."""
        data = self.cleaned_data
        tags = split_tags(data["tags"]) or None
        everything = data["all_environments"] and not tags
        return {
            "environment_ids": None if everything else (data["environments"] or None),
            "tags": tags,
            "exclude_tags": split_tags(data["exclude_tags"]) or None,
        }

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        return {
            **self.selection_arguments(),
            "version": data["version"].strip(),
            "ec2_instance_id": data["ec2_instance_id"].strip(),
            "ec2_public_ip": data["ec2_public_ip"].strip(),
        }


def _choice_label(environment: RemoteEnvironment) -> str:
    if not environment.tags:
        return environment.environment_id
    return f"{environment.environment_id} ({', '.join(environment.tags)})"


def enabled_environments() -> list[RemoteEnvironment]:
    return list(environments_enabled().only("id", "environment_id", "tags"))


def _next_url(request, default: str) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def deploy_view(request, *, model_admin):
    """GET: the Deploy form (`?environments=a,b` ticks those). POST: start a coordination
    (triggered_by admin) and go back to where the form was, or show the form's errors."""
    require_operator(request)
    environments = enabled_environments()
    if request.method == "POST":
        form = DeployForm(request.POST, environments=environments)
        if form.is_valid():
            try:
                coordination = coordination_start(
                    triggered_by=TriggerSource.ADMIN, user=request.user, **form.service_arguments()
                )
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                model_admin.log_addition(request, coordination, "Deployed from the admin.")
                count = coordination.targets.count()
                messages.success(
                    request,
                    format_html(
                        'Started <a href="{}">{}</a>: {} environment{} deploying.',
                        coordination_url(coordination),
                        coordination.coordination_id,
                        count,
                        "" if count == 1 else "s",
                    ),
                )
                return HttpResponseRedirect(_next_url(request, reverse("admin:index")))
    else:
        wanted = [item for item in re.split(r"[,\s]+", request.GET.get("environments", "")) if item]
        known = {environment.environment_id for environment in environments}
        skipped = [item for item in wanted if item not in known]
        if skipped:
            messages.warning(request, f"Not offered (unknown or disabled): {', '.join(skipped)}.")
        selected = [item for item in wanted if item in known]
        initial = {"all_environments": not selected, "environments": selected}
        form = DeployForm(initial=initial, environments=environments)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Deploy",
        "opts": model_admin.opts,
        "form": form,
        "next": _next_url(request, ""),
        "has_environments": bool(environments),
    }
    return TemplateResponse(request, "admin/deployments/deploy.html", context)


def _add_service_errors(form: DeployForm, exc: ValidationError) -> None:
    fields = {"environments": "environments", "version": "version"}
    fields.update({"ec2_instance_id": "ec2_instance_id", "ec2_public_ip": "ec2_public_ip"})
    fields.update({"tags": "tags", "exclude_tags": "exclude_tags"})
    for name, problems in exc.message_dict.items():
        field = fields.get(name)
        for problem in problems:
            form.add_error(field, problem if field else f"{name}: {problem}")


@require_GET
def deploy_selection_view(request, *, model_admin):
    """The Deploy form's count before it starts: which environments a choice
    (`all_environments`, `environments`, `tags`, `exclude_tags`, as the form posts them)
    selects, by the rule the start itself applies. A choice that selects nothing, or is
    bad input, answers its problems by field, as the form would show them."""
    require_viewer(request)
    form = DeployForm(request.GET, environments=enabled_environments())
    errors: dict[str, list[str]] = {}
    selected: list[RemoteEnvironment] = []
    if not form.is_valid():
        errors = {name: list(problems) for name, problems in form.errors.items()}
    else:
        try:
            selected = environments_for_deployment(**form.selection_arguments())
        except ValidationError as exc:
            errors = exc.message_dict
    ids = [environment.environment_id for environment in selected]
    return JsonResponse({"count": len(ids), "environments": ids, "errors": errors})


@require_GET
def dashboard_live_view(request, *, model_admin):
    require_viewer(request)
    return JsonResponse(dashboard_live(request))


@require_GET
def coordination_live_view(request, pk: int, *, model_admin):
    require_viewer(request)
    coordination = get_object_or_404(Coordination, pk=pk)
    raw = request.GET.get("after", "0")
    if not raw.isdigit() or int(raw) > MAX_AFTER:
        return JsonResponse({"after": ["must be a whole number of at least 0"]}, status=400)
    return JsonResponse(coordination_live(request, coordination, after=int(raw)))


@require_POST
def coordination_cancel_view(request, pk: int, *, model_admin):
    require_operator(request)
    coordination = get_object_or_404(Coordination, pk=pk)
    try:
        coordination_cancel(coordination=coordination, user=request.user)
    except CoordinationConflict as exc:
        messages.error(request, exc.message)
    else:
        model_admin.log_change(request, coordination, "Cancelled from the admin.")
        messages.success(request, f"Cancelled {coordination.coordination_id}: running environments are hung up.")
    return HttpResponseRedirect(coordination_url(coordination))


@require_POST
def coordination_retry_view(request, pk: int, *, model_admin):
    require_operator(request)
    coordination = get_object_or_404(Coordination, pk=pk)
    retry, problem = retry_coordination(model_admin, request, coordination)
    if retry is None:
        messages.error(request, problem)
        return HttpResponseRedirect(coordination_url(coordination))
    return HttpResponseRedirect(coordination_url(retry))


def retry_coordination(model_admin, request, coordination: Coordination) -> tuple[Coordination | None, str]:
    """Retry one coordination's failed environments; (the retry, "") or (None, why not).
    The success message names the new coordination."""
    try:
        retry = coordination_retry(coordination=coordination, user=request.user, triggered_by=TriggerSource.ADMIN)
    except CoordinationConflict as exc:
        return None, exc.message
    except ValidationError as exc:
        return None, "; ".join(message for messages_ in exc.message_dict.values() for message in messages_)
    model_admin.log_addition(request, retry, f"Retry of {coordination.coordination_id} from the admin.")
    count = retry.targets.count()
    messages.success(
        request,
        format_html(
            'Retrying {} environment{} of {} as <a href="{}">{}</a>.',
            count,
            "" if count == 1 else "s",
            coordination.coordination_id,
            coordination_url(retry),
            retry.coordination_id,
        ),
    )
    return retry, ""
