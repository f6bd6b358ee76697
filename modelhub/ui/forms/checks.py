"""Forms of the checks pages: the history's filters, "run now", a schedule's interval."""

from django import forms

from modelhub.api.filters import MAX_INT
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.schedules import MAX_EVERY_S, MIN_EVERY_S
from modelhub.serving.models import Deployment, InferenceServer

ANY = [("", "any")]
# The browser's date-time picker sends and expects "2026-01-31T12:00" (the site's time zone is UTC).
TIME_INPUT = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class CheckFilterForm(forms.Form):
    """The history's filters, read from the query string; every field may be left out."""

    kind = forms.ChoiceField(choices=ANY + CheckKind.choices, required=False)
    status = forms.ChoiceField(choices=ANY + Status.choices, required=False)
    server = forms.CharField(max_length=100, required=False, help_text="Server name")
    model = forms.CharField(max_length=100, required=False, help_text="Model name")
    deployment = forms.IntegerField(min_value=1, max_value=MAX_INT, required=False, help_text="Deployment id")
    since = forms.DateTimeField(required=False, widget=TIME_INPUT, help_text="UTC")
    until = forms.DateTimeField(required=False, widget=TIME_INPUT, help_text="UTC")

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            self.add_error(
                "until", f"must be after since ({since:%Y-%m-%d %H:%M} is not before {until:%Y-%m-%d %H:%M})"
            )
        return cleaned

    def filter(self, queryset):
        """`queryset` narrowed by the valid filters given."""
        data = self.cleaned_data
        lookups = {
            "kind": data.get("kind"),
            "status": data.get("status"),
            "server__name": data.get("server"),
            "version__model__name": data.get("model"),
            "deployment_id": data.get("deployment"),
            "created_at__gte": data.get("since"),
            "created_at__lt": data.get("until"),
        }
        return queryset.filter(**{k: v for k, v in lookups.items() if v not in (None, "")})


class RunNowForm(forms.Form):
    """One target: a deployment (by id) or a server (by name); `next` is where to go after."""

    deployment = forms.IntegerField(min_value=1, max_value=MAX_INT, required=False)
    server = forms.CharField(max_length=100, required=False)
    next = forms.CharField(max_length=2000, required=False)

    def clean(self):
        cleaned = super().clean()
        deployment, server = cleaned.get("deployment"), cleaned.get("server")
        if self.errors:
            return cleaned
        if bool(deployment) == bool(server):
            raise forms.ValidationError("give either deployment=<id> or server=<name>, not both and not neither")
        cleaned["target"] = self._target(deployment, server)
        return cleaned

    @staticmethod
    def _target(deployment_id: int | None, server_name: str | None):
        if deployment_id:
            found = Deployment.objects.select_related("version__model", "server").filter(pk=deployment_id).first()
            if found is None:
                raise forms.ValidationError({"deployment": f"no deployment with id {deployment_id}"})
            return found
        found = InferenceServer.objects.filter(name=server_name).first()
        if found is None:
            raise forms.ValidationError({"server": f"no server named {server_name!r}"})
        return found


class ScheduleForm(forms.Form):
    every_s = forms.IntegerField(
        label="Every (seconds)",
        min_value=MIN_EVERY_S,
        max_value=MAX_EVERY_S,
        help_text=f"From {MIN_EVERY_S} to {MAX_EVERY_S} s (7 days); other schedules on the same interval keep theirs.",
    )
    enabled = forms.BooleanField(required=False)

    def __init__(self, *args, has_interval: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not has_interval:
            # A crontab (or solar, clocked) schedule: only whether it runs is editable here.
            del self.fields["every_s"]
