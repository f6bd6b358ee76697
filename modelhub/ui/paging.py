"""Keyset pages, newest first, over the tables that only grow (check results, the audit log).

A page is one indexed query on (created_at, id): no COUNT, no OFFSET, so a page deep in
a table of millions of rows costs what the first does. A cursor is the (created_at, id)
of a row where a page stops, written `<UTC time>Z_<id>` (no "+" that a hand-edited
query string would turn into a space). `?before=<cursor>` is the page of rows older
than that row, `?after=<cursor>` the page of rows newer than it; a page with several
lists gives each its own parameters with a prefix (`health_before`).
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Q, QuerySet


class BadCursor(ValueError):
    """A cursor this site did not give out (hand-edited, truncated): answer 400 with it."""


@dataclass(frozen=True)
class Cursor:
    """A row's place in the newest-first order: its time, then its id (times may be equal)."""

    created_at: datetime
    id: int

    def __str__(self) -> str:
        return f"{self.created_at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z_{self.id}"

    @classmethod
    def of(cls, row) -> "Cursor":
        return cls(row.created_at, row.pk)

    @classmethod
    def parse(cls, text: str) -> "Cursor":
        moment, _, pk = text.rpartition("_")
        try:
            created_at, row_id = datetime.fromisoformat(moment), int(pk)
        except (ValueError, OverflowError):
            raise BadCursor(f"{text[:100]!r} is not a page of this list: open the first page") from None
        if created_at.tzinfo is None or not 0 < row_id < 2**63:
            raise BadCursor(f"{text[:100]!r} is not a page of this list: open the first page")
        return cls(created_at, row_id)

    def older(self) -> Q:
        return Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, id__lt=self.id)

    def newer(self) -> Q:
        return Q(created_at__gt=self.created_at) | Q(created_at=self.created_at, id__gt=self.id)


@dataclass
class KeysetPage:
    rows: list
    older: str | None  # the query string of the next, older page (filters kept); None: none
    newer: str | None  # the query string of the previous, newer page; None on the newest page
    newest: str  # the query string of the newest page (filters kept)
    is_first: bool  # no cursor given: this is the newest page


def keyset_page(request, queryset: QuerySet, *, size: int, prefix: str = "", strict: bool = True) -> KeysetPage:
    """The page `request.GET[prefix + "before" | "after"]` names (the newest without either).

    A cursor this site did not give out, or both at once, raises BadCursor; with
    `strict=False` it gives the newest page instead (one list among several on a page)."""
    before_key, after_key = f"{prefix}before", f"{prefix}after"
    before, after = request.GET.get(before_key), request.GET.get(after_key)
    try:
        if before and after:
            raise BadCursor(f"give {before_key} or {after_key}, not both")
        for given in (before, after):
            if given:
                Cursor.parse(given)
    except BadCursor:
        if strict:
            raise
        before = after = None
    if after:
        rows = list(queryset.filter(Cursor.parse(after).newer()).order_by("created_at", "id")[: size + 1])
        has_newer, rows = len(rows) > size, rows[:size][::-1]
        has_older = True  # the row the cursor came from is older than all of these
    else:
        if before:
            queryset = queryset.filter(Cursor.parse(before).older())
        rows = list(queryset.order_by("-created_at", "-id")[: size + 1])
        has_older, rows = len(rows) > size, rows[:size]
        has_newer = bool(before)

    def link(key: str | None = None, row=None) -> str:
        query = request.GET.copy()
        query.pop(before_key, None)
        query.pop(after_key, None)
        if key:
            query[key] = str(Cursor.of(row))
        return query.urlencode()

    return KeysetPage(
        rows=rows,
        older=link(before_key, rows[-1]) if rows and has_older else None,
        newer=link(after_key, rows[0]) if rows and has_newer else None,
        newest=link(),
        is_first=not (before or after),
    )
