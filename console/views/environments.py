"""The environment admin's own pages: import a `remote_environments.json` (a preview of
what would change, then the same all-or-nothing import as the command), export, approve
an offered SSH host key, and generate a polling agent's token (shown once). Each write
calls one service after checking the role."""

import hashlib
import json
import secrets
import shlex

from django import forms
from django.contrib import messages
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import get_script_prefix, reverse
from django.utils.cache import patch_cache_control
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

from accounts.admin_roles import require_operator, require_viewer
from deployments.selectors import environment_host_key_offer
from environments.agent_tokens import new_token
from environments.config import (
    ENVIRONMENT_FIELDS,
    MAX_CONFIG_FILE_BYTES,
    MAX_CONFIG_FILE_LABEL,
    STORED_AS,
    ConfigError,
    ConfigFileError,
    ImportPlan,
    export_config,
    parse_config,
)
from environments.connectors.ssh import fingerprint, parse_host_key
from environments.fields import SecretDecryptionError, decrypt, encrypt
from environments.models import SECRET_FIELDS, WRITE_ONLY_FIELDS, RemoteEnvironment
from environments.services import environment_pin_host_key, environment_set_agent_token, environments_import

# How long a preview may be applied after it was shown.
PREVIEW_MAX_AGE_SECONDS = 3600
# The salt from when these views lived in environments/: a preview shown before the move stays valid.
_PREVIEW_SALT = "environments.admin.import-preview"
_PREVIEW_CACHE_PREFIX = "console.import-preview:"


class ImportForm(forms.Form):
    file = forms.FileField(
        label="Config file",
        help_text=f"remote_environments.json, as import_environments reads it (at most {MAX_CONFIG_FILE_LABEL}).",
    )
    prune = forms.BooleanField(required=False, label="Also delete the environments the file does not list")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_CONFIG_FILE_BYTES:
            raise ValidationError(f"The file is larger than {MAX_CONFIG_FILE_LABEL}, the limit for a config file.")
        try:
            self.parsed = parse_config(upload.read())
        except ConfigFileError as exc:
            problem = str(exc)
            raise ValidationError(problem[:1].upper() + problem[1:]) from None
        return upload


def _seal(data, prune: bool) -> str:
    """Keep the uploaded file for the Apply step on the server (the shared cache), and
    give the page only a signed, timestamped reference to it: a file of several MiB
    would not fit in a form field (DATA_UPLOAD_MAX_MEMORY_SIZE), and it may hold secrets,
    so it is stored encrypted."""
    reference = secrets.token_urlsafe(32)
    content = encrypt(json.dumps({"data": data, "prune": prune}))
    cache.set(_PREVIEW_CACHE_PREFIX + reference, content, timeout=PREVIEW_MAX_AGE_SECONDS)
    return signing.TimestampSigner(salt=_PREVIEW_SALT).sign(reference)


def _unseal(payload: str) -> tuple[object, bool]:
    reference = signing.TimestampSigner(salt=_PREVIEW_SALT).unsign(payload, max_age=PREVIEW_MAX_AGE_SECONDS)
    sealed = cache.get(_PREVIEW_CACHE_PREFIX + reference)
    if sealed is None:
        raise KeyError("the preview is no longer kept")
    content = json.loads(decrypt(sealed))
    return content["data"], bool(content["prune"])


def _forget(payload: str) -> None:
    reference = signing.TimestampSigner(salt=_PREVIEW_SALT).unsign(payload)
    cache.delete(_PREVIEW_CACHE_PREFIX + reference)


def _changed_fields(current: RemoteEnvironment, planned: RemoteEnvironment) -> list[str]:
    changes = []
    for name in ENVIRONMENT_FIELDS:
        stored = STORED_AS.get(name, name)  # an agent token changes its hash
        before, after = getattr(current, stored), getattr(planned, stored)
        if before == after:
            continue
        if name in WRITE_ONLY_FIELDS:
            changes.append(f"{name}: {'set' if after else 'cleared'}")
        elif name == "host_key":
            changes.append(f"host_key: {_key_label(before)} → {_key_label(after)}")
        elif name == "tags":
            changes.append(f"tags: {', '.join(before) or 'none'} → {', '.join(after) or 'none'}")
        else:
            changes.append(f"{name}: {before!r} → {after!r}")
    return changes


def _key_label(key: str) -> str:
    if not key:
        return "none"
    try:
        return fingerprint(parse_host_key(key))
    except ValueError:
        return "an invalid key"


def _preview(plan: ImportPlan) -> dict:
    current = RemoteEnvironment.objects.in_bulk([environment.pk for environment in plan.update])
    rows = [{"verb": "create", "environment": environment, "changes": []} for environment in plan.create]
    rows += [
        {"verb": "update", "environment": environment, "changes": _changed_fields(current[environment.pk], environment)}
        for environment in plan.update
    ]
    rows += [{"verb": "delete", "environment": environment, "changes": []} for environment in plan.delete]
    digest_source = [(row["verb"], row["environment"].environment_id, row["changes"]) for row in rows]
    digest_source.append(sorted(plan.blocks))
    return {
        "rows": rows,
        "unchanged": [environment.environment_id for environment in plan.unchanged],
        "blocks": sorted(plan.blocks),
        "warnings": [f"mapped {mapped} (the original format's name)" for mapped in plan.mapped] + plan.warnings,
        "digest": hashlib.sha256(json.dumps(digest_source, default=str).encode()).hexdigest(),
        "counts": {
            "create": len(plan.create),
            "update": len(plan.update),
            "unchanged": len(plan.unchanged),
            "delete": len(plan.delete),
        },
    }


def _render_import(request, model_admin, **context):
    return TemplateResponse(
        request,
        "admin/environments/remoteenvironment/import.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": "Import environments",
            **context,
        },
    )


def import_view(request, *, model_admin):
    """1. Upload: validate the file as the command does and show what would change
    (nothing is written). 2. Apply: the same import, all or nothing; if the environments
    changed since the preview, show the new preview instead of applying."""
    require_operator(request)
    if request.method != "POST":
        return _render_import(request, model_admin, form=ImportForm())
    if "payload" in request.POST:
        return _apply(request, model_admin)
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_import(request, model_admin, form=form)
    prune = form.cleaned_data["prune"]
    try:
        plan = environments_import(data=form.parsed, prune=prune, dry_run=True)
    except ConfigError as exc:
        return _render_import(request, model_admin, form=form, errors=exc.errors)
    except SecretDecryptionError as exc:
        return _render_import(request, model_admin, form=form, errors=[str(exc)])
    return _render_import(request, model_admin, preview=_preview(plan), payload=_seal(form.parsed, prune), prune=prune)


def _apply(request, model_admin):
    try:
        data, prune = _unseal(request.POST["payload"])
    except (signing.BadSignature, SecretDecryptionError, ValueError, KeyError):
        messages.error(request, "This preview has expired or is not valid: upload the file again.")
        return HttpResponseRedirect(reverse("admin:environments_remoteenvironment_import"))
    try:
        with transaction.atomic():
            planned = _preview(environments_import(data=data, prune=prune, dry_run=True))
            if planned["digest"] != request.POST.get("digest"):
                return _render_import(
                    request,
                    model_admin,
                    preview=planned,
                    payload=request.POST["payload"],
                    prune=prune,
                    changed_since=True,
                )
            plan = environments_import(data=data, prune=prune, user=request.user)
    except (ConfigError, SecretDecryptionError) as exc:
        errors = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
        return _render_import(request, model_admin, form=ImportForm(), errors=errors)
    _forget(request.POST["payload"])
    for environment in plan.create:
        model_admin.log_addition(request, environment, "Imported from a config file.")
    for environment in plan.update:
        model_admin.log_change(request, environment, "Imported from a config file.")
    messages.success(
        request,
        f"Imported: {len(plan.create)} created, {len(plan.update)} updated, {len(plan.unchanged)} unchanged, "
        f"{len(plan.delete)} deleted.",
    )
    return HttpResponseRedirect(reverse("admin:environments_remoteenvironment_changelist"))


@require_GET
def export_view(request, *, model_admin):
    """The environments and settings blocks as a config file, never with secrets (the
    command's --include-secrets is for a terminal, not a browser download)."""
    require_viewer(request)
    body = json.dumps(export_config(include_secrets=False), indent=2, ensure_ascii=False) + "\n"
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="remote_environments.json"'
    return response


@require_POST
def approve_host_key_view(request, pk: int, *, model_admin):
    """Pin the host key the environment offered, if it is still the one the page showed."""
    require_operator(request)
    environment = get_object_or_404(RemoteEnvironment, pk=pk)
    change_url = reverse("admin:environments_remoteenvironment_change", args=[environment.pk])
    offer = environment_host_key_offer(environment=environment)
    if offer is None:
        messages.error(request, "There is no offered host key to approve: it was pinned or settled meanwhile.")
        return HttpResponseRedirect(change_url)
    if offer.fingerprint != request.POST.get("fingerprint", ""):
        messages.error(request, "The offered host key changed since the page was shown: review the new fingerprint.")
        return HttpResponseRedirect(change_url)
    environment_pin_host_key(environment=environment, key=offer.offered_key, user=request.user)
    model_admin.log_change(request, environment, f"Approved and pinned the offered host key {offer.fingerprint}.")
    messages.success(
        request,
        format_html(
            "Pinned {} for {}: its runs now trust this key only. Retry the failed deployment to use it.",
            offer.fingerprint,
            environment.environment_id,
        ),
    )
    return HttpResponseRedirect(change_url)


# Where the agent reads its token from, in the command line the token page shows.
AGENT_TOKEN_FILE = "agent-token.txt"  # noqa: S105 (a file name)


def agent_command(request, environment: RemoteEnvironment) -> str:
    """The agent's command line for this environment, polling the platform this request came to."""
    platform = request.build_absolute_uri(get_script_prefix()).rstrip("/")
    return shlex.join(
        [
            "python3",
            "agent/powerautomation_agent.py",
            "--poll",
            platform,
            "--environment-id",
            environment.environment_id,
            "--token-file",
            AGENT_TOKEN_FILE,
            "--script",
            environment.init_script_path or "./init_aicore.sh",
        ]
    )


@require_POST
def generate_agent_token_view(request, pk: int, *, model_admin):
    """Replace the environment's agent token with a new random one and show it this once.

    The platform keeps only its hash, so this page is the only place the token ever
    appears: it is rendered here (not put in a message, which may be kept in a cookie),
    never cached, and the admin log records that it changed, not what it is."""
    require_operator(request)
    environment = get_object_or_404(RemoteEnvironment.objects.defer(*SECRET_FIELDS), pk=pk)
    token = new_token()
    try:
        environment_set_agent_token(environment=environment, token=token)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
        return HttpResponseRedirect(reverse("admin:environments_remoteenvironment_changelist"))
    model_admin.log_change(request, environment, "Generated a new agent token; the previous one is no longer accepted.")
    response = TemplateResponse(
        request,
        "admin/environments/remoteenvironment/agent_token.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": f"Agent token for {environment.environment_id}",
            "original": environment,
            "token": token,
            "token_file": AGENT_TOKEN_FILE,
            "command": agent_command(request, environment),
        },
    )
    patch_cache_control(response, no_store=True)
    return response
