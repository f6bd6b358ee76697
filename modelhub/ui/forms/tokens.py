"""Forms of the tokens page: a new token for oneself, and the admin's filter by user.

A token never does more than its owner's role allows (modelhub.api.permissions
intersects the two on every request), so the form offers only the scopes the
person's role holds and refuses the others, as `create_api_token` does: a scope
the role lacks would only make a token that fails later.
"""

from datetime import timedelta

from django import forms
from django.utils import timezone

from modelhub.access.roles import role_refusal, role_scopes
from modelhub.api.models import SCOPE_IMPLIES, Scope
from modelhub.registry.models import Model

DEFAULT_LIFETIME_DAYS = 90
MAX_LIFETIME_DAYS = 365  # a forgotten CI token stops working within a year


def scopes_allowed(user) -> list[tuple[str, str]]:
    """The scope choices `user`'s role holds (with every scope each one implies)."""
    held = role_scopes(user)
    return [(value, label) for value, label in Scope.choices if SCOPE_IMPLIES[value] <= held]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. ci-main")
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_in_days = forms.IntegerField(
        label="Expires in (days)",
        min_value=1,
        max_value=MAX_LIFETIME_DAYS,
        initial=DEFAULT_LIFETIME_DAYS,
        help_text=f"1 to {MAX_LIFETIME_DAYS} days",
    )
    models = forms.ModelMultipleChoiceField(
        Model.objects.order_by("name"),
        required=False,
        to_field_name="name",
        label="Only these models",
        help_text="None chosen: every model",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        # Offer the role's scopes only; clean_scopes still refuses a forged one by name.
        self.fields["scopes"].widget.choices = scopes_allowed(user)

    def clean_scopes(self) -> list[str]:
        scopes = self.cleaned_data["scopes"]
        held = role_scopes(self.user)
        lacking = [s for s in scopes if not SCOPE_IMPLIES[s] <= held]
        if lacking:
            raise forms.ValidationError([role_refusal(s) for s in lacking])
        return scopes

    @property
    def expires_at(self):
        return timezone.now() + timedelta(days=self.cleaned_data["expires_in_days"])


class TokenFilterForm(forms.Form):
    """An admin's view of everyone's tokens, narrowed to one person."""

    user = forms.CharField(required=False, max_length=150, label="User", help_text="exact username")
