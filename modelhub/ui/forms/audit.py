"""The audit log's filters and its cursor.

The log only grows, so it pages by keyset on (created_at, id), newest first: no COUNT,
and a page deep in the log costs what the first one does. A cursor is the
(created_at, id) of the row a page stops at, written `<ISO date-time>~<id>`.
"""

import re
from datetime import datetime

from django import forms
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from modelhub.audit.models import Source

CURSOR = re.compile(r"(?P<at>[0-9T:.+\- ]{19,40})~(?P<id>[0-9]{1,19})")


def make_cursor(event) -> str:
    return f"{event.created_at.isoformat()}~{event.pk}"


def parse_cursor(value: str) -> tuple[datetime, int] | None:
    """(created_at, id) from a cursor this page gave out; None if it is not one."""
    match = CURSOR.fullmatch(value)
    try:
        at = parse_datetime(match["at"]) if match else None
    except ValueError:  # well-formed, but no such date
        at = None
    if at is None or at.tzinfo is None:
        return None
    return at, int(match["id"])


class CursorField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if not value:
            return None
        position = parse_cursor(value)
        if position is None:
            raise forms.ValidationError("is not a cursor this page gave out: follow the Older and Newer links")
        return position


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
    # Where a page starts: after (older than) or before (newer than) a row.
    after = CursorField(required=False, widget=forms.HiddenInput)
    before = CursorField(required=False, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "must be after since")
        if data.get("after") and data.get("before"):
            raise forms.ValidationError("give one of after and before, not both")
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


def older_than(events: QuerySet, position: tuple[datetime, int]) -> QuerySet:
    at, pk = position
    return events.filter(Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk))


def newer_than(events: QuerySet, position: tuple[datetime, int]) -> QuerySet:
    at, pk = position
    return events.filter(Q(created_at__gt=at) | Q(created_at=at, pk__gt=pk))
