"""The audit log: who did what, when, from where; filterable, newest first, paged by cursor."""

import json
from dataclasses import dataclass

from django.shortcuts import render
from django.urls import reverse

from modelhub.access.roles import Scope
from modelhub.audit.models import AuditEvent
from modelhub.ui.access import require_scope
from modelhub.ui.forms.audit import AuditFilterForm, make_cursor, newer_than, older_than

PAGE_SIZE = 50
DETAILS_SHOWN = 200  # characters of the details' JSON in the row; the whole of it on hover

# The page that shows an object of this type, from the audit row alone (no query per row).
_OBJECT_PAGES = {
    "serving.deployment": lambda e: reverse("ui:deployment-detail", args=[int(e.object_id)]),
    "serving.inferenceserver": lambda e: reverse("ui:server-detail", args=[e.object_repr]),
    "alerts.alert": lambda e: reverse("ui:alert-detail", args=[int(e.object_id)]),
    "alerts.alertrule": lambda e: reverse("ui:rule-edit", args=[int(e.object_id)]),
    "registry.model": lambda e: reverse("ui:model-detail", args=[e.object_repr]),
}


@dataclass
class Page:
    events: list
    older: str | None  # query string of the next (older) page
    newer: str | None  # query string of the previous (newer) page
    newest: str  # query string of the first page, filters kept


def _link(request, **cursor) -> str:
    query = request.GET.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    query.update(cursor)
    return query.urlencode()


def _page(request, form: AuditFilterForm) -> Page:
    """One page of the filtered log: PAGE_SIZE + 1 rows fetched to know whether more follow."""
    events = form.filter(AuditEvent.objects.order_by("-created_at", "-id"))
    before, after = form.cleaned_data["before"], form.cleaned_data["after"]
    if before:
        rows = list(newer_than(events, before).order_by("created_at", "id")[: PAGE_SIZE + 1])
        more_newer, more_older = len(rows) > PAGE_SIZE, True
        rows = rows[:PAGE_SIZE][::-1]
    else:
        rows = list((older_than(events, after) if after else events)[: PAGE_SIZE + 1])
        more_older, more_newer = len(rows) > PAGE_SIZE, after is not None
        rows = rows[:PAGE_SIZE]
    for event in rows:
        _describe(event)
    return Page(
        events=rows,
        older=_link(request, after=make_cursor(rows[-1])) if rows and more_older else None,
        newer=_link(request, before=make_cursor(rows[0])) if rows and more_newer else None,
        newest=_link(request),
    )


def _describe(event: AuditEvent) -> None:
    details = json.dumps(event.details, sort_keys=True, separators=(",", ":"), default=str)
    event.details_json = "" if details == "{}" else details
    event.details_short = event.details_json[:DETAILS_SHOWN] + ("…" if len(details) > DETAILS_SHOWN else "")
    page = _OBJECT_PAGES.get(event.object_type)
    event.object_url = page(event) if page and event.object_id.isdigit() else None


@require_scope(Scope.READ)
def audit_list(request):
    form = AuditFilterForm(request.GET)
    page = _page(request, form) if form.is_valid() else None
    return render(request, "ui/audit/list.html", {"form": form, "page": page, "filtered": bool(request.GET)})
