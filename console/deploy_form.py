"""The admin's Deploy form: which environments (as `trigger_local` chooses them), the
version, the EC2 platform deploy it follows, and the rollout policy over the config file's
defaults.

The form judges no rollout value: it turns each text into the value the start takes, as
`trigger_local` does (`environments.rollout.parse_flag`), and the start's one rule
(`environments.rollout.problem`) judges it. `add_service_errors` puts the start's errors
back on the fields they are about (`rollout.batch_size` on the batch size, ...)."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from console.presenters import CONCURRENCY_TEXT, coordination_url, pause_text
from deployments.models import Coordination
from deployments.services import EnvironmentsBusy
from environments.models import RemoteEnvironment
from environments.rollout import APPROVAL, CONCURRENCY, Rollout, parse_flag
from environments.tags import split_tags

# A line of comma-separated tags: room for many labels, still bounded.
TAGS_INPUT_MAX_LENGTH = 2000
# A list of 20 wave sizes ("100%, ") fits; anything longer is not a rollout value.
ROLLOUT_INPUT_MAX_LENGTH = 200
PAUSE_NONE, PAUSE_SECONDS = "none", "seconds"
# The start's field names (its ValidationError keys) that are not the form's own.
SERVICE_FIELDS = {
    "rollout.batch_size": "batch_size",
    "rollout.max_failures": "max_failures",
    "rollout.batch_pause_seconds": "batch_pause_seconds",
    "rollout.concurrency": "concurrency",
}


def _text(placeholder: str, *, size: int = 14, numeric: bool = False, max_length: int = ROLLOUT_INPUT_MAX_LENGTH):
    attrs = {"placeholder": placeholder, "size": size}
    if numeric:
        attrs["inputmode"] = "numeric"
    return forms.CharField(required=False, max_length=max_length, widget=forms.TextInput(attrs=attrs))


class DeployForm(forms.Form):
    """What `trigger_local` asks for: which environments (all enabled ones, or those
    ticked and those with any of the tags, less those with any of the excluded tags), the
    version, the EC2 platform deploy this follows, and the rollout. An empty rollout field
    keeps the config file's default (shown as its placeholder)."""

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
    batch_size = _text("all at once")
    max_failures = _text("no limit", size=8)
    pause_after_first = forms.ChoiceField(required=False, label="After the first wave")
    pause_after_first_seconds = _text("60", size=6, numeric=True, max_length=20)
    batch_pause_seconds = _text("0", size=6, numeric=True, max_length=20)
    concurrency = forms.ChoiceField(required=False, label="A busy environment")

    def __init__(
        self,
        *args,
        environments: list[RemoteEnvironment],
        defaults: Rollout,
        enabled_count: int | None = None,
        **kwargs,
    ):
        """`enabled_count`, with no `environments`: a form that offers no single
        environment to tick (the dashboard's, at fleet size), only all and tags."""
        super().__init__(*args, **kwargs)
        self.fields["environments"].choices = [
            (environment.environment_id, _choice_label(environment)) for environment in environments
        ]
        count = len(environments) if enabled_count is None else enabled_count
        self.fields["all_environments"].label = f"All enabled environments ({count})"
        self.defaults = defaults
        self._offer_rollout_defaults(defaults)

    def _offer_rollout_defaults(self, defaults: Rollout) -> None:
        """Each rollout field's empty value is the config file's default: say which."""
        fields = self.fields
        if defaults.batch_size:
            fields["batch_size"].widget.attrs["placeholder"] = ", ".join(str(size) for size in defaults.batch_size)
        if defaults.max_failures is not None:
            fields["max_failures"].widget.attrs["placeholder"] = str(defaults.max_failures)
        fields["batch_pause_seconds"].widget.attrs["placeholder"] = str(defaults.batch_pause_seconds)
        fields["pause_after_first"].choices = [
            ("", f"Default: {pause_text(defaults.pause_after_first_batch) or 'go straight on'}"),
            (PAUSE_NONE, "Go straight on"),
            (APPROVAL, "Wait for an ADMIN's approval"),
            (PAUSE_SECONDS, "Pause for (seconds):"),
        ]
        fields["concurrency"].choices = [("", f"Default: {defaults.concurrency}")] + [
            (value, f"{value}: {CONCURRENCY_TEXT[value]}") for value in CONCURRENCY
        ]

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

    def rollout_arguments(self) -> dict | None:
        """The rollout keys given (None: every default), as the start's `rollout` takes
        them. Reads only fields that cleaned, so it also serves a form that has errors."""
        data = self.cleaned_data
        values = {}
        for key in ("batch_size", "max_failures", "batch_pause_seconds"):
            if text := (data.get(key) or "").strip():
                values[key] = parse_flag(key, text)
        pause = self._pause_choice()
        if pause == PAUSE_NONE:
            values["pause_after_first_batch"] = 0
        elif pause == APPROVAL:
            values["pause_after_first_batch"] = APPROVAL
        elif pause == PAUSE_SECONDS:
            values["pause_after_first_batch"] = parse_flag(
                "pause_after_first_batch", data.get("pause_after_first_seconds") or ""
            )
        if data.get("concurrency"):
            values["concurrency"] = data["concurrency"]
        return values or None

    def _pause_choice(self) -> str:
        """The choice after the first wave; seconds typed with the choice left at its
        default (a page without its script shows the box always) mean "pause for"."""
        pause = self.cleaned_data.get("pause_after_first") or ""
        if not pause and (self.cleaned_data.get("pause_after_first_seconds") or "").strip():
            return PAUSE_SECONDS
        return pause

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        return {
            **self.selection_arguments(),
            "rollout": self.rollout_arguments(),
            "version": data["version"].strip(),
            "ec2_instance_id": data["ec2_instance_id"].strip(),
            "ec2_public_ip": data["ec2_public_ip"].strip(),
        }

    def field_of(self, service_field: str) -> str | None:
        """The form field that shows the start's error about `service_field` (None: the
        form as a whole)."""
        if service_field == "rollout.pause_after_first_batch":
            seconds = self._pause_choice() == PAUSE_SECONDS
            return "pause_after_first_seconds" if seconds else "pause_after_first"
        if service_field in SERVICE_FIELDS:
            return SERVICE_FIELDS[service_field]
        return service_field if service_field in self.fields else None

    def add_service_errors(self, exc: ValidationError) -> None:
        for name, problems in exc.message_dict.items():
            field = self.field_of(name)
            for problem in problems:
                self.add_error(field, problem if field else f"{name}: {problem}")

    def add_busy_error(self, exc: EnvironmentsBusy) -> None:
        """`concurrency: reject` refused the start: name each busy environment and the
        coordination holding it, linked."""
        holders = Coordination.objects.filter(coordination_id__in=exc.busy.values()).only("pk", "coordination_id")
        urls = {holder.coordination_id: coordination_url(holder) for holder in holders}
        listed = format_html_join(
            ", ",
            '{} (in <a href="{}">{}</a>)',
            ((environment_id, urls.get(holder, ""), holder) for environment_id, holder in exc.busy.items()),
        )
        message = "Nothing started: these environments are in another running coordination (concurrency reject): {}"
        self.add_error(None, ValidationError(format_html(message, listed)))


def _choice_label(environment: RemoteEnvironment) -> str:
    if not environment.tags:
        return environment.environment_id
    return f"{environment.environment_id} ({', '.join(environment.tags)})"
