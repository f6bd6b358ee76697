"""The audit log's filters (its pages: modelhub/ui/paging.py)."""

from django import forms
from django.db.models import QuerySet

from modelhub.audit.models import Source


def _hinted(hint: str) -> forms.TextInput:
    # A filter bar has no room for help texts: the hint sits in the empty box.
    return forms.TextInput(attrs={"placeholder": hint})


class AuditFilterForm(forms.Form):
    """GET filters of the audit log; an invalid one is refused with a message naming it."""

    actor = forms.CharField(required=False, max_length=200, widget=_hinted("contains, e.g. alice or token:ci"))
    action = forms.CharField(required=False, max_length=64, widget=_hinted("or a prefix: deployment."))
    object_type = forms.CharField(required=False, max_length=64, widget=_hinted("e.g. registry.model"))
    object_id = forms.CharField(required=False, max_length=64)
    source = forms.ChoiceField(choices=[("", "any"), *Source.choices], required=False)
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "must be after since")
        return data

    def filter(self, events: QuerySet) -> QuerySet:
        """`events` narrowed to the filters (call only when the form is valid)."""
        data = self.cleaned_data
        if data["actor"]:
            events = events.filter(actor__icontains=data["actor"])
        if data["action"]:
            events = events.filter(action__startswith=data["action"])
        for field in ("object_type", "object_id", "source"):
            if data[field]:
                events = events.filter(**{field: data[field]})
        if data["since"]:
            events = events.filter(created_at__gte=data["since"])
        if data["until"]:
            events = events.filter(created_at__lt=data["until"])
        return events
