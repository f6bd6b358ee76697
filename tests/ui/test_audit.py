"""The audit log page: who did what, filterable, newest first, paged by cursor without dupes or skips."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from modelhub.audit.models import AuditEvent, Source
from modelhub.ui.views import audit as audit_view

URL = reverse("ui:audit-list")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(action="model.create", actor="user:alice", source=Source.API, at=T0, **fields) -> AuditEvent:
    e = AuditEvent.objects.create(action=action, actor=actor, source=source, **fields)
    AuditEvent.objects.filter(pk=e.pk).update(created_at=at)  # auto_now_add: set afterwards
    return e


def shown(response) -> list[int]:
    assert response.status_code == 200
    return [int(pk) for pk in re.findall(r'data-testid="audit-row" data-event="(\d+)"', response.content.decode())]


def link(response, rel: str) -> str | None:
    match = re.search(rf'<a href="(\?[^"]*)" rel="{rel}">', response.content.decode())
    return match.group(1).replace("&amp;", "&") if match else None


def test_anonymous_is_sent_to_login_and_no_role_is_refused(client, client_as):
    assert client.get(URL).status_code == 302
    assert client_as(None).get(URL).status_code == 403


def test_a_viewer_reads_the_log_newest_first_with_compact_details(client_as):
    old = event(at=T0, object_type="registry.model", object_id="7", object_repr="digits", model_name="digits")
    new = event(
        action="token.create",
        actor="user:bob",
        source=Source.UI,
        at=T0 + timedelta(minutes=1),
        details={"scopes": ["read"], "user": "bob"},
        remote_addr="10.0.0.9",
    )
    response = client_as("viewer").get(URL)
    assert shown(response) == [new.pk, old.pk]
    page = response.content.decode()
    assert "{&quot;scopes&quot;:[&quot;read&quot;],&quot;user&quot;:&quot;bob&quot;}" in page  # compact JSON
    assert "10.0.0.9" in page and "user:bob" in page
    assert f'href="{reverse("ui:model-detail", args=["digits"])}"' in page


def test_long_details_are_cut_in_the_row_and_whole_on_hover(client_as):
    event(details={"message": "x" * 500})
    page = client_as("viewer").get(URL).content.decode()
    assert "x" * 500 in page  # the title attribute
    assert re.search(r">\{&quot;message&quot;:&quot;x{100,190}…</code>", page)


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"actor": "ALI"}, {"alice-ui", "alice-api"}),
        ({"action": "deployment."}, {"deploy", "undeploy"}),
        ({"action": "deployment.deploy"}, {"deploy"}),
        ({"object_type": "serving.deployment", "object_id": "5"}, {"deploy"}),
        ({"source": "ui"}, {"alice-ui", "undeploy"}),
        ({"since": "2026-03-01T12:01", "until": "2026-03-01T12:03"}, {"alice-api", "deploy"}),
    ],
)
def test_filters_narrow_the_log(client_as, query, expected):
    rows = {
        "alice-ui": event(actor="user:alice", source=Source.UI, at=T0),
        "alice-api": event(actor="token:alice-ci", at=T0 + timedelta(minutes=1)),
        "deploy": event(
            "deployment.deploy",
            "user:bob",
            object_type="serving.deployment",
            object_id="5",
            at=T0 + timedelta(minutes=2),
        ),
        "undeploy": event(
            "deployment.undeploy",
            "user:bob",
            Source.UI,
            object_type="serving.deployment",
            object_id="6",
            at=T0 + timedelta(minutes=3),
        ),
    }
    pks = set(shown(client_as("viewer").get(URL, query)))
    assert pks == {rows[name].pk for name in expected}


@pytest.mark.parametrize(
    "query, message",
    [
        ({"since": "yesterday"}, "since: Enter a valid date/time."),
        (
            {"source": "carrier-pigeon"},
            "source: Select a valid choice. carrier-pigeon is not one of the available choices.",
        ),
        ({"since": "2026-03-02T00:00", "until": "2026-03-01T00:00"}, "until: must be after since"),
        ({"before": "12~3"}, "is not a page of this list: open the first page"),
        ({"after": "2026-02-30T00:00:00Z_3"}, "is not a page of this list: open the first page"),
        ({"before": "2026-02-01T00:00:00Z_3", "after": "2026-02-01T00:00:00Z_4"}, "give before or after, not both"),
    ],
)
def test_a_bad_filter_says_which_and_why_instead_of_a_500(client_as, query, message):
    event()
    response = client_as("viewer").get(URL, query)
    assert response.status_code == 200
    errors = re.search(r'data-testid="filter-errors">(.*?)</div>\s*\n', response.content.decode(), re.S).group(1)
    assert message in errors.replace("&#x27;", "'")
    assert 'data-testid="audit-row"' not in response.content.decode()


def walk(client, start: str, rel: str):
    """Follow the `rel` links from `start`: (the rows of each page, the last response)."""
    pages, response = [], client.get(URL + start)
    while True:
        pages.append(shown(response))
        following = link(response, rel)
        if following is None:
            return pages, response
        response = client.get(URL + following)


def test_paging_over_equal_timestamps_neither_repeats_nor_skips_and_walks_back(client_as, monkeypatch):
    monkeypatch.setattr(audit_view, "PAGE_SIZE", 3)
    # Seven events, five of them in the same instant: the id breaks the tie.
    same_instant = [event(at=T0) for _ in range(5)]
    later = [event(at=T0 + timedelta(seconds=s)) for s in (1, 2)]
    newest_first = [*reversed(later), *reversed(same_instant)]
    client = client_as("viewer")
    forward, last = walk(client, "?", "next")
    assert [len(p) for p in forward] == [3, 3, 1]
    assert [pk for p in forward for pk in p] == [e.pk for e in newest_first]
    # From the last page back to the first by the Newer links.
    back, _ = walk(client, link(last, "prev"), "prev")
    assert back == forward[-2::-1]


def test_paging_keeps_the_filters(client_as, monkeypatch):
    monkeypatch.setattr(audit_view, "PAGE_SIZE", 2)
    wanted = [event(actor="user:alice", at=T0 + timedelta(seconds=s)) for s in range(5)]
    for s in range(5):
        event(actor="user:bob", at=T0 + timedelta(seconds=s))
    pages, _ = walk(client_as("viewer"), "?actor=alice", "next")
    assert sorted(pk for p in pages for pk in p) == sorted(e.pk for e in wanted)


def test_a_page_costs_the_same_queries_however_long_the_log(client_as):
    client = client_as("viewer")
    event()
    client.get(URL)
    with CaptureQueriesContext(connection) as few:
        client.get(URL)
    AuditEvent.objects.bulk_create(AuditEvent(action="x.y", actor="system", source=Source.SYSTEM) for _ in range(200))
    with CaptureQueriesContext(connection) as many:
        response = client.get(URL)
    assert len(shown(response)) == audit_view.PAGE_SIZE
    assert len(many) == len(few)
    assert not any("COUNT(" in q["sql"] and "audit_auditevent" in q["sql"] for q in many.captured_queries)


def test_an_empty_log_says_what_will_appear_and_an_empty_filter_how_to_widen_it(client_as):
    client = client_as("viewer")
    assert "Nothing recorded yet" in client.get(URL).content.decode()
    assert "No events match these filters" in client.get(URL, {"actor": "nobody"}).content.decode()
