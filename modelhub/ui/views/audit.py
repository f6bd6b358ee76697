"""The audit log: who did what, when, from where; filterable, newest first, paged by cursor."""

import json

from django.shortcuts import render
from django.urls import reverse

from modelhub.access.roles import Scope
from modelhub.audit.models import AuditEvent
from modelhub.ui.access import require_scope
from modelhub.ui.forms.audit import AuditFilterForm
from modelhub.ui.paging import BadCursor, keyset_page

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


def _describe(event: AuditEvent) -> None:
    details = json.dumps(event.details, sort_keys=True, separators=(",", ":"), default=str)
    event.details_json = "" if details == "{}" else details
    event.details_short = event.details_json[:DETAILS_SHOWN] + ("…" if len(details) > DETAILS_SHOWN else "")
    page = _OBJECT_PAGES.get(event.object_type)
    event.object_url = page(event) if page and event.object_id.isdigit() else None


@require_scope(Scope.READ)
def audit_list(request):
    form = AuditFilterForm(request.GET)
    page = None
    if form.is_valid():
        events = form.filter(AuditEvent.objects.all())
        try:
            page = keyset_page(request, events, size=PAGE_SIZE)
        except BadCursor as exc:
            form.add_error(None, str(exc))
        else:
            for event in page.rows:
                _describe(event)
    return render(request, "ui/audit/list.html", {"form": form, "page": page, "filtered": bool(request.GET)})
