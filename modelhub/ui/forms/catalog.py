"""Forms of the models pages: the list's filters, promoting an alias, rolling one back.

Error texts follow the REST API's for the same input, so a person reads the same
words whichever way they asked.
"""

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from modelhub.registry.models import Model, ModelVersion, TaskKind, alias_name_validator
from modelhub.serving.models import ObservedState


def _any(choices) -> list[tuple[str, str]]:
    return [("", "any"), *choices]


class ModelFilterForm(forms.Form):
    """The model list's search and filters (GET); every field is optional."""

    q = forms.CharField(required=False, max_length=200, label="Search", help_text="name or description")
    task = forms.ChoiceField(
        required=False,
        choices=_any(TaskKind.choices),
        error_messages={"invalid_choice": "task %(value)r is not one of: " + ", ".join(TaskKind.values)},
    )
    owner = forms.ModelChoiceField(
        required=False,
        queryset=get_user_model().objects.none(),
        to_field_name="username",
        empty_label="any",
        error_messages={"invalid_choice": "no model is owned by a user named %(value)r"},
    )
    alias = forms.CharField(
        required=False, max_length=50, validators=[alias_name_validator], help_text="models having this alias"
    )
    state = forms.ChoiceField(
        required=False,
        label="Deployment state",
        choices=_any(ObservedState.choices),
        error_messages={"invalid_choice": "state %(value)r is not one of: " + ", ".join(ObservedState.values)},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only people who own something: the select stays short however many users exist.
        owners = get_user_model().objects.filter(owned_models__isnull=False).distinct().order_by("username")
        self.fields["owner"].queryset = owners

    def filters_applied(self) -> bool:
        return any(self.cleaned_data.get(name) for name in self.fields)


class VersionOfModel:
    """A form's `version` field, a number, cleaned to that version of the form's `model`."""

    def clean_version(self) -> ModelVersion:
        number = self.cleaned_data["version"]
        version = self.model.versions.filter(number=number).first()
        if version is None:
            raise ValidationError(f"model {self.model.name!r} has no version {number}")
        return version


class AliasMoveForm(VersionOfModel, forms.Form):
    """Point an alias (named by the URL) at one version of `model`."""

    version = forms.IntegerField(min_value=1, widget=forms.Select)
    gate = forms.BooleanField(
        required=False,
        label="only past the promotion gates",
        help_text="the version must be loaded, conform to its schema, meet the latency SLO and not lose accuracy",
    )

    def __init__(self, *args, model: Model, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model
        numbers = model.versions.order_by("-number").values_list("number", flat=True)
        self.fields["version"].widget.choices = [(n, f"v{n}") for n in numbers]


class PromoteForm(AliasMoveForm):
    """The model page's promote form: the alias is typed (an existing one or a new one)."""

    alias = forms.CharField(
        max_length=50,
        validators=[alias_name_validator],
        help_text="existing or new",
        # The page lists the model's aliases in a <datalist id="alias-names">.
        widget=forms.TextInput(attrs={"list": "alias-names", "placeholder": "production"}),
    )
    field_order = ["alias", "version", "gate"]


class RollbackForm(forms.Form):
    """The version the roll-back button offered: if the alias moved since, the button is stale."""

    to_version = forms.IntegerField(min_value=1)


class CanaryForm(VersionOfModel, forms.Form):
    """Start a canary on an alias, or change the running one's weight (its version posted again),
    as the REST API's PUT …/canary/ does."""

    version = forms.IntegerField(min_value=1)
    weight = forms.IntegerField(
        min_value=1,
        max_value=99,
        help_text="percent of the alias's traffic the canary gets",
        error_messages={
            "min_value": "must be 1-99 (percent of the traffic the canary gets); 0 is an abort",
            "max_value": "must be 1-99 (percent of the traffic the canary gets); 100 is a promotion",
        },
    )

    def __init__(self, *args, model: Model, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model
