"""The admin's own deployment pages, hung off the coordination admin's URLs: the Deploy
form and its live count, the dashboard's and a coordination page's live JSON, approve,
cancel and retry. Each write calls one service; each checks the role first
(accounts/admin_roles.py)."""

import re

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts.admin_roles import require_operator, require_viewer
from console.coordination_page import coordination_live
from console.dashboard import dashboard_live, parse_version
from console.deploy_form import DeployForm
from console.presenters import coordination_url, selection_summary
from deployments.api.output import answer as output_answer
from deployments.models import Coordination, CoordinationTarget, TriggerSource
from deployments.script_output import output_read
from deployments.services import (
    CoordinationConflict,
    EnvironmentsBusy,
    coordination_approve,
    coordination_cancel,
    coordination_retry,
    coordination_start,
)
from environments.config import current_rollout, rollout_for
from environments.models import RemoteEnvironment
from environments.selectors import environments_enabled, environments_for_deployment

MAX_AFTER = 2**62


def whole_number(raw: str) -> int | None:
    """`raw` as a whole number in [0, MAX_AFTER], or None. ASCII digits only: str.isdigit()
    also takes '²' (which int() refuses) and int() refuses more than 4,300 digits."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_AFTER)):
        return None
    value = int(raw)
    return value if value <= MAX_AFTER else None


def enabled_environments() -> list[RemoteEnvironment]:
    return list(environments_enabled().only("id", "environment_id", "tags"))


def deploy_form(data=None, *, environments: list[RemoteEnvironment], **kwargs) -> DeployForm:
    """The Deploy form over these environments, its rollout fields offering the config
    file's defaults."""
    return DeployForm(data, environments=environments, defaults=current_rollout(), **kwargs)


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
        form = deploy_form(request.POST, environments=environments)
        if form.is_valid():
            try:
                coordination = coordination_start(
                    triggered_by=TriggerSource.ADMIN, user=request.user, **form.service_arguments()
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            except EnvironmentsBusy as exc:
                form.add_busy_error(exc)
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
        form = deploy_form(initial=initial, environments=environments)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Deploy",
        "opts": model_admin.opts,
        "form": form,
        "next": _next_url(request, ""),
        "has_environments": bool(environments),
    }
    return TemplateResponse(request, "admin/deployments/deploy.html", context)


@require_GET
def deploy_selection_view(request, *, model_admin):
    """The Deploy form's count before it starts: which environments a choice
    (`all_environments`, `environments`, `tags`, `exclude_tags`, as the form posts them)
    selects, and the waves the chosen rollout (its fields, as the form posts them) splits
    them into, by the rules the start itself applies. Bad input answers its problems by
    the form's field, as the form would show them; a start is never made."""
    require_viewer(request)
    form = deploy_form(request.GET, environments=enabled_environments())
    errors: dict[str, list[str]] = {}
    selected: list[RemoteEnvironment] = []
    if not form.is_valid():
        errors = {name: list(problems) for name, problems in form.errors.items()}
    else:
        try:
            selected = environments_for_deployment(**form.selection_arguments())
        except ValidationError as exc:
            errors = exc.message_dict
    policy = form.defaults
    try:
        policy = rollout_for(form.rollout_arguments())
    except ValidationError as exc:
        for name, problems in exc.message_dict.items():
            errors.setdefault(form.field_of(name) or "__all__", []).extend(problems)
    ids = [environment.environment_id for environment in selected]
    plan = policy.resolved(len(ids))
    return JsonResponse(
        {
            "count": len(ids),
            "environments": ids,
            "errors": errors,
            "waves": plan["waves"],
            "failure_budget": plan["failure_budget"],
            "summary": selection_summary(len(ids), plan),
        }
    )


@require_GET
def dashboard_live_view(request, *, model_admin):
    """The dashboard's poll. `?version=` (the one the page or the previous answer gave):
    only the fragments that changed since; a poll when nothing changed answers the version
    and nothing else."""
    require_viewer(request)
    raw = request.GET.get("version", "")
    try:
        known = parse_version(raw) if raw else None
    except ValueError as exc:
        return JsonResponse({"version": [str(exc)]}, status=400)
    return JsonResponse(dashboard_live(request, known=known))


@require_GET
def coordination_live_view(request, pk: int, *, model_admin):
    require_viewer(request)
    coordination = get_object_or_404(Coordination, pk=pk)
    after = whole_number(request.GET.get("after", "0"))
    if after is None:
        return JsonResponse({"after": ["must be a whole number of at least 0"]}, status=400)
    return JsonResponse(coordination_live(request, coordination, after=after))


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
def coordination_approve_view(request, pk: int, *, model_admin):
    """Approve the rest of a rollout awaiting approval after its first wave; back to the
    coordination's page, or to `next` (the dashboard's button)."""
    require_operator(request)
    coordination = get_object_or_404(Coordination, pk=pk)
    try:
        coordination_approve(coordination=coordination, user=request.user)
    except CoordinationConflict as exc:
        messages.error(request, exc.message)
    else:
        model_admin.log_change(request, coordination, "Approved the rest of the rollout from the admin.")
        messages.success(request, f"Approved {coordination.coordination_id}: the next wave opens now.")
    return HttpResponseRedirect(_next_url(request, coordination_url(coordination)))


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


# One live-view answer carries at most this much: a 10 MiB output comes in a few polls.
OUTPUT_PIECE_BYTES = 256 * 1024


@require_GET
def coordination_output_view(request, pk: int, environment_id: str, *, model_admin):
    """One environment's whole output: a page that follows it live, its JSON pieces
    (`?offset=N`), and the file (`?download=1`). VIEWERs may read it (secrets were masked
    before it was stored)."""
    require_viewer(request)
    target = get_object_or_404(
        CoordinationTarget.objects.select_related("coordination"), coordination_id=pk, environment_id=environment_id
    )
    coordination_id = target.coordination.coordination_id
    if request.GET.get("download") == "1":
        response = HttpResponse(output_read(target).text, content_type="text/plain; charset=utf-8")
        name = f"{coordination_id}-{environment_id}.log".replace('"', "")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response
    if "offset" in request.GET:
        offset = whole_number(request.GET["offset"])
        if offset is None:
            return JsonResponse({"offset": ["must be a whole number of at least 0"]}, status=400)
        piece = output_read(target, offset=offset, limit=OUTPUT_PIECE_BYTES)
        return JsonResponse(
            output_answer(coordination_id, environment_id, piece), headers={"Cache-Control": "no-store"}
        )
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Output of {environment_id}",
        "coordination": target.coordination,
        "target": target,
        "live_url": request.path,
    }
    return TemplateResponse(request, "admin/deployments/coordination/output.html", context)
