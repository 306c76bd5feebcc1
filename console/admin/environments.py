"""The environments in the admin: register (form or config-file import), export, check,
deploy, and approve SSH host keys. Roles as in the API: VIEWER reads, ADMIN does."""

import json
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.admin_roles import RoleAdmin, can_operate
from console.presenters import agent_badge, agent_presence, health_badge, target_badge
from console.views import environments as views
from deployments.selectors import (
    environment_check_results,
    environment_host_key_offer,
    environment_recent_targets,
    environments_with_last_outcome_columns,
)
from environments.agent_tokens import MAX_CHARS as AGENT_TOKEN_MAX_CHARS, MIN_CHARS as AGENT_TOKEN_MIN_CHARS
from environments.config import masked_blocks, settings_block_problems
from environments.connectors.ssh import fingerprint, parse_host_key
from environments.models import (
    AGENT_TOKEN,
    RETARGETING_HELP,
    SECRET_FIELDS,
    WRITE_ONLY_FIELDS,
    ConnectionMethod,
    RemoteEnvironment,
    SettingsBlock,
)
from environments.selectors import environments_tagged, tags_in_use
from environments.services import (
    environment_save,
    environments_check_queue,
    environments_delete,
)
from environments.tags import MAX_TAGS, split_tags
from powerautomation import json_input


class TagListFormField(forms.CharField):
    """Tags as one comma-separated line. The model's validator (environments/tags.py)
    checks the list, so the form says what the API and the config file say."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return split_tags(super().to_python(value))


AGENT_TOKEN_HELP = (
    f"Polling agents: {AGENT_TOKEN_MIN_CHARS}-{AGENT_TOKEN_MAX_CHARS} visible ASCII characters, each environment its "
    "own; only its hash is stored. Simpler: save, then “Generate agent token” at the top of the page."
)
# Which connection method uses which address field: a polling agent connects out, so it needs none.
CONNECTION_HELP = (
    "SSH: host, port, username, ssh_key_path (or a password), host_key, detach. "
    "HTTP API: api_endpoint, or host and port. Webhook: webhook_url, or host and port. "
    "Polling agent: none of these (the agent connects out to the platform), only poll_interval and an agent token."
)
ADDRESS_HELP = "Not needed for a polling agent: it connects out to the platform."


class RemoteEnvironmentForm(forms.ModelForm):
    """Secrets are write-only: the form never renders a stored value, and leaving the
    box empty keeps what is stored. The agent token goes through the model
    (`environment.agent_token = ...`), which keeps only its hash and reports a bad one."""

    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    api_token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    webhook_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    agent_token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    tags = TagListFormField(
        required=False,
        widget=forms.TextInput(attrs={"size": 60, "placeholder": "mac, team-a"}),
        help_text=f"Comma-separated, at most {MAX_TAGS}: lowercase letters, digits, '_', '.' or '-'. "
        "Deploy by tag from the Deploy form, trigger_local --tags or the API.",
    )
    clear_secrets = forms.MultipleChoiceField(
        required=False,
        choices=[(name, name) for name in WRITE_ONLY_FIELDS],
        widget=forms.CheckboxSelectMultiple,
        help_text="Tick to remove a stored secret.",
    )

    class Meta:
        model = RemoteEnvironment
        fields = (
            "environment_id",
            "environment_type",
            "connection_method",
            "enabled",
            "tags",
            "description",
            "host",
            "port",
            "username",
            "ssh_key_path",
            "host_key",
            "detach",
            "api_endpoint",
            "webhook_url",
            "password",
            "api_token",
            "webhook_secret",
            "poll_interval",
            "init_script_path",
            "working_directory",
            "timeout",
            "health_check_url",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in SECRET_FIELDS:
            stored = bool(self.instance.pk and getattr(self.instance, name))
            kept = "Stored: set. Leave empty to keep it. " if stored else "Stored: not set. "
            self.fields[name].help_text = kept + RETARGETING_HELP
        if self.instance.pk and self.instance.agent_token_hash:
            kept = "Stored: set. Leave empty to keep it; a new one replaces it (an agent with the old one is refused). "
        else:
            kept = "Stored: not set. "
        self.fields[AGENT_TOKEN].help_text = kept + AGENT_TOKEN_HELP
        for name in ("host", "port"):
            if name in self.fields:  # a VIEWER's form has none
                self.fields[name].help_text = ADDRESS_HELP
        if "poll_interval" in self.fields:
            # Only polling agents use it: a form posted without it keeps the stored value.
            self.fields["poll_interval"].required = False

    def clean_poll_interval(self):
        value = self.cleaned_data.get("poll_interval")
        return self.instance.poll_interval if value is None else value

    def _post_clean(self):
        # Put the kept secrets back before the model's own validation sees the instance;
        # one typed in or cleared is given (the model then lets it go to a new address).
        cleared = self.cleaned_data.get("clear_secrets", [])
        stored = RemoteEnvironment.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        for name in SECRET_FIELDS:
            if stored is not None and not self.cleaned_data.get(name) and name not in cleared:
                self.cleaned_data[name] = getattr(stored, name)
            elif name in self.cleaned_data:
                self.instance.give_secret(name, self.cleaned_data[name])
        # The model checks it (clean(), under `agent_token`) and keeps only its hash.
        if self.cleaned_data.get(AGENT_TOKEN):
            self.instance.agent_token = self.cleaned_data[AGENT_TOKEN]
        elif AGENT_TOKEN in cleared:
            self.instance.agent_token = ""
        super()._post_clean()


def _key_fingerprint(key: str) -> str:
    try:
        return fingerprint(parse_host_key(key))
    except ValueError:
        return ""


def _latest_check(environment: RemoteEnvironment, results: list[dict]) -> dict | None:
    for result in results:
        for report in result["reports"]:
            if report.get("environment_id") == environment.environment_id:
                kind = "Connectivity preflight" if result["connectivity"] else "Health check"
                return {**report, "kind": kind, "stopped": result["stopped"]}
    return None


class TagListFilter(admin.SimpleListFilter):
    """The tags in use, each a filter: the environments that have it."""

    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return [(tag, tag) for tag in tags_in_use()]

    def queryset(self, request, queryset):
        return environments_tagged(queryset, tags=[self.value()]) if self.value() else queryset


@admin.register(RemoteEnvironment)
class RemoteEnvironmentAdmin(RoleAdmin):
    form = RemoteEnvironmentForm
    list_display = (
        "environment_id",
        "environment_type",
        "connection_method",
        "address",
        "enabled",
        "tags_shown",
        "health",
        "agent",
        "last_deployment",
    )
    list_filter = ("enabled", TagListFilter, "connection_method", "environment_type", "last_health")
    search_fields = ("environment_id", "host", "description")
    actions = ("deploy_selected", "health_check_now", "connectivity_preflight", "delete_selected")
    readonly_fields = (
        "health",
        "last_health_at",
        "last_health_detail",
        "created_at",
        "updated_at",
        "password_status",
        "api_token_status",
        "webhook_secret_status",
        "agent_status",
    )
    _first = (
        None,
        {"fields": ("environment_id", "environment_type", "connection_method", "enabled", "tags", "description")},
    )
    _connection = (
        "Connection",
        {
            "fields": (
                "host",
                "port",
                "username",
                "ssh_key_path",
                "host_key",
                "detach",
                "api_endpoint",
                "webhook_url",
                "poll_interval",
            ),
            "description": CONNECTION_HELP,
        },
    )
    _script = ("Init script", {"fields": ("init_script_path", "working_directory", "timeout", "health_check_url")})
    _health = ("Health", {"fields": ("health", "last_health_at", "last_health_detail", "created_at", "updated_at")})
    fieldsets = (
        _first,
        _connection,
        (
            "Secrets",
            {"fields": ("password", "api_token", "webhook_secret", "agent_token", "agent_status", "clear_secrets")},
        ),
        _script,
        _health,
    )
    # What a VIEWER sees: every field read-only, and secrets only as "set"/"not set" (a
    # read-only view of the secret fields themselves would print the decrypted values).
    viewer_fieldsets = (
        _first,
        _connection,
        ("Secrets", {"fields": ("password_status", "api_token_status", "webhook_secret_status", "agent_status")}),
        _script,
        _health,
    )

    def get_fieldsets(self, request, obj=None):
        return self.fieldsets if can_operate(request) else self.viewer_fieldsets

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == "environments_remoteenvironment_changelist":
            # The list never reads (decrypts) a secret.
            queryset = environments_with_last_outcome_columns(queryset.defer(*SECRET_FIELDS))
        return queryset

    def get_search_results(self, request, queryset, search_term):
        # search_fields cannot look inside the tags (JSON) the same way on SQLite and
        # PostgreSQL: a word of the search that is a tag also finds the environments with it.
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        words = [word.lower() for word in search_term.split()]
        if words:
            results = results | environments_tagged(queryset, tags=words)
        return results, may_have_duplicates

    def get_urls(self):
        wrap = self.admin_view_of
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("import/", wrap(views.import_view), name=f"{name}_import"),
            path("export/", wrap(views.export_view), name=f"{name}_export"),
            path(
                "<int:pk>/approve-host-key/", wrap(views.approve_host_key_view), name=f"{name}_approve_host_key"
            ),
            path(
                "<int:pk>/generate-agent-token/",
                wrap(views.generate_agent_token_view),
                name=f"{name}_generate_agent_token",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        environment = self.get_object(request, object_id)
        if environment is not None:
            extra_context = {**(extra_context or {}), **self._page_context(request, environment)}
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_operate": can_operate(request)}
        return super().changelist_view(request, extra_context)

    def _page_context(self, request, environment: RemoteEnvironment) -> dict:
        results = environment_check_results()
        return {
            "can_operate": can_operate(request),
            "host_key_offer": environment_host_key_offer(environment=environment, check_results=results),
            "pinned_fingerprint": _key_fingerprint(environment.host_key) if environment.host_key else "",
            "recent_targets": environment_recent_targets(environment=environment),
            "latest_check": _latest_check(environment, results),
            "agent": agent_presence(environment),
            "polling": environment.connection_method == ConnectionMethod.POLLING,
        }

    # --- writes: each calls a service -------------------------------------------------------

    def save_model(self, request, obj, form, change):
        # Entering a key by hand approves it as much as the one-click approval does.
        environment_save(environment=obj, user=request.user)

    def delete_model(self, request, obj):
        environments_delete(environments=[obj])

    def delete_queryset(self, request, queryset):
        environments_delete(environments=list(queryset))

    # --- columns --------------------------------------------------------------------------

    @admin.display(description="host:port")
    def address(self, obj):
        return obj.address

    @admin.display(description="tags")
    def tags_shown(self, obj):
        return ", ".join(obj.tags) if obj.tags else "–"

    @admin.display(description="health", ordering="last_health")
    def health(self, obj):
        title = obj.last_health_detail
        if obj.last_health_at:
            title = f"{obj.last_health_at:%Y-%m-%d %H:%M:%S} UTC: {title}"
        return health_badge(obj.last_health, title)

    @admin.display(description="agent")
    def agent(self, obj):
        return agent_badge(obj)

    @admin.display(description="last deployment")
    def last_deployment(self, obj):
        status = getattr(obj, "last_status", None)
        if not status:
            return "–"
        return format_html(
            '{} <a href="{}" class="pa-quiet">{}</a>',
            target_badge(status, obj.last_reason or ""),
            reverse("admin:deployments_coordination_change", args=[obj.last_coordination_pk]),
            obj.last_coordination_id,
        )

    def _secret_status(self, obj, name: str) -> str:
        return "set" if obj is not None and getattr(obj, name) else "not set"

    @admin.display(description="password")
    def password_status(self, obj):
        return self._secret_status(obj, "password")

    @admin.display(description="API token")
    def api_token_status(self, obj):
        return self._secret_status(obj, "api_token")

    @admin.display(description="webhook secret")
    def webhook_secret_status(self, obj):
        return self._secret_status(obj, "webhook_secret")

    @admin.display(description="agent")
    def agent_status(self, obj):
        token = "token set" if obj is not None and obj.agent_token_hash else "token not set"
        presence = agent_presence(obj) if obj is not None else None
        if presence is None:
            return f"{token} (used when the connection method is “Polling agent”)"
        return format_html("{} · {} {}", token, agent_badge(obj), f"(online: seen within {presence['limit']} s)")

    # --- actions --------------------------------------------------------------------------

    @admin.action(description="Deploy to the selected environments", permissions=["operate"])
    def deploy_selected(self, request, queryset):
        ids = ",".join(queryset.order_by("environment_id").values_list("environment_id", flat=True))
        return HttpResponseRedirect(
            reverse("admin:deployments_coordination_deploy") + "?" + urlencode({"environments": ids})
        )

    @admin.action(description="Health-check the selected environments now", permissions=["operate"])
    def health_check_now(self, request, queryset):
        environments = list(queryset)
        checked = [environment for environment in environments if environment.health_check_url]
        skipped = [environment.environment_id for environment in environments if not environment.health_check_url]
        count = environments_check_queue(environments=checked)
        if count:
            self.message_user(
                request,
                f"Queued a health check of {count} environment{'s' if count != 1 else ''}: the Health column and the "
                "dashboard show the results within seconds.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, f"No health_check_url, not checked: {', '.join(skipped)}.", messages.WARNING)

    @admin.action(description="Connectivity preflight of the selected environments", permissions=["operate"])
    def connectivity_preflight(self, request, queryset):
        count = environments_check_queue(environments=list(queryset), connectivity=True)
        self.message_user(
            request,
            f"Queued a connectivity preflight of {count} environment{'s' if count != 1 else ''} (connect, verify the "
            "host key, authenticate; nothing runs on them; a polling agent passes when seen within 3 × its poll "
            "interval): the results show on the dashboard and on each "
            "environment's page within seconds.",
            messages.SUCCESS,
        )


class SettingsBlockForm(forms.ModelForm):
    """The block's values as JSON text, read by the project's bounded JSON reader (depth,
    duplicate keys, NaN) and checked by the config file's rules for that block (names,
    types, bounds), so the admin is no way around them."""

    values = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "cols": 80}))

    class Meta:
        model = SettingsBlock
        fields = ("name", "values")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["values"] = json.dumps(self.instance.values, indent=2, ensure_ascii=False)

    def clean_values(self):
        try:
            return json_input.loads(self.cleaned_data["values"])
        except json_input.JSONInputError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None

    def clean(self):
        data = super().clean()
        if "values" in data and data.get("name"):
            problems = settings_block_problems(data["name"], data["values"])
            if problems:
                self.add_error("values", problems)
        return data


@admin.register(SettingsBlock)
class SettingsBlockAdmin(RoleAdmin):
    """A VIEWER sees the values with every credential masked (a notification webhook URL
    is one); an ADMIN edits them whole."""

    form = SettingsBlockForm
    list_display = ("name", "updated_at")
    readonly_fields = ("updated_at", "shown_values")

    def get_fields(self, request, obj=None):
        return ("name", "values", "updated_at") if can_operate(request) else ("name", "shown_values", "updated_at")

    @admin.display(description="values")
    def shown_values(self, obj):
        values = masked_blocks({obj.name: obj.values})[obj.name] if obj is not None else {}
        return format_html("<pre>{}</pre>", json.dumps(values, indent=2, ensure_ascii=False))
