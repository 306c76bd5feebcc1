from django import forms
from django.contrib import admin

from environments.models import SECRET_FIELDS, RemoteEnvironment, SettingsBlock


class RemoteEnvironmentForm(forms.ModelForm):
    """Secrets are write-only: the form never renders a stored value, and leaving the
    box empty keeps what is stored."""

    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    api_token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    webhook_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    clear_secrets = forms.MultipleChoiceField(
        required=False,
        choices=[(name, name) for name in SECRET_FIELDS],
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
            "description",
            "host",
            "port",
            "username",
            "ssh_key_path",
            "host_key",
            "api_endpoint",
            "webhook_url",
            "password",
            "api_token",
            "webhook_secret",
            "init_script_path",
            "working_directory",
            "timeout",
            "health_check_url",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in SECRET_FIELDS:
            stored = bool(self.instance.pk and getattr(self.instance, name))
            self.fields[name].help_text = "Stored: set. Leave empty to keep it." if stored else "Stored: not set."

    def _post_clean(self):
        # Put the kept secrets back before the model's own validation sees the instance.
        cleared = self.cleaned_data.get("clear_secrets", [])
        stored = RemoteEnvironment.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        for name in SECRET_FIELDS:
            if stored is not None and not self.cleaned_data.get(name) and name not in cleared:
                self.cleaned_data[name] = getattr(stored, name)
        super()._post_clean()


@admin.register(RemoteEnvironment)
class RemoteEnvironmentAdmin(admin.ModelAdmin):
    form = RemoteEnvironmentForm
    list_display = (
        "environment_id",
        "environment_type",
        "connection_method",
        "address",
        "enabled",
        "last_health",
        "last_health_at",
    )
    list_filter = ("enabled", "connection_method", "environment_type", "last_health")
    search_fields = ("environment_id", "host", "description")
    readonly_fields = ("last_health", "last_health_at", "last_health_detail", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("environment_id", "environment_type", "connection_method", "enabled", "description")}),
        (
            "Connection",
            {"fields": ("host", "port", "username", "ssh_key_path", "host_key", "api_endpoint", "webhook_url")},
        ),
        ("Secrets", {"fields": ("password", "api_token", "webhook_secret", "clear_secrets")}),
        ("Init script", {"fields": ("init_script_path", "working_directory", "timeout", "health_check_url")}),
        ("Health", {"fields": ("last_health", "last_health_at", "last_health_detail", "created_at", "updated_at")}),
    )

    @admin.display(description="host:port")
    def address(self, obj):
        return obj.address


@admin.register(SettingsBlock)
class SettingsBlockAdmin(admin.ModelAdmin):
    list_display = ("name", "updated_at")
    readonly_fields = ("updated_at",)
