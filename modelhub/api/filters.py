"""Query filters of the API's lists (django-filter), and the paginators.

Like the request fields, query parameters accept what the schema says and
refuse the rest with 400: a boolean is true or false, an integer is digits,
a date-time is RFC 3339.
"""

import re
from datetime import UTC, datetime, timedelta, timezone

import django_filters as filters
from django import forms
from django.utils.dateparse import parse_datetime
from django_filters.fields import ChoiceField as FilterChoiceField
from drf_spectacular.utils import extend_schema_field
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import LimitOffsetPagination

from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import AliasMove, Model, ModelVersion, TaskKind
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState

MAX_INT = 2_147_483_647


def _query_int(request, name: str, minimum: int, maximum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,19}", raw):
        raise ValidationError({name: f"{raw!r} is not an integer"})
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValidationError({name: f"must be between {minimum} and {maximum}"})
    return value


class Pagination(LimitOffsetPagination):
    """limit/offset paging that refuses bad values instead of silently ignoring them."""

    max_limit = 1000

    def get_limit(self, request) -> int:
        value = _query_int(request, self.limit_query_param, 1, self.max_limit)
        return self.default_limit if value is None else value

    def get_offset(self, request) -> int:
        value = _query_int(request, self.offset_query_param, 0, 2**62)
        return 0 if value is None else value

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0, "maximum": 2**62},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters


class CursorPagination(pagination.CursorPagination):
    """Paging by cursor, for append-only tables (audit events, deployment transitions).

    No COUNT, and a page deep in the log costs what the first one does (an OFFSET
    would scan every row before it). A cursor can only follow an order on an
    unchanging column, so the view's ordering_fields are created_at and id; the
    other field is added as a tie-break so the order is total. Pages follow the
    `next` and `previous` links; `limit` sets the page size as elsewhere.
    """

    page_size_query_param = "limit"
    max_page_size = 1000
    cursor_query_description = "Where the page starts: the `cursor` of a `next` or `previous` link"
    page_size_query_description = "Number of results per page"

    def get_page_size(self, request) -> int:
        value = _query_int(request, self.page_size_query_param, 1, self.max_page_size)
        return self.page_size if value is None else value

    def paginate_queryset(self, queryset, request, view=None):
        if "offset" in request.query_params:
            raise ValidationError({"offset": "this list pages by cursor: follow the next and previous links"})
        return super().paginate_queryset(queryset, request, view)

    def get_ordering(self, request, queryset, view) -> tuple[str, ...]:
        # The view's ordering filter has refused fields outside ordering_fields (400).
        terms, seen = [], set()
        for term in super().get_ordering(request, queryset, view):
            if term.lstrip("-") not in seen:
                seen.add(term.lstrip("-"))
                terms.append(term)
        if "id" not in seen:
            terms.append("-id" if terms[0].startswith("-") else "id")
        return tuple(terms)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = None
            valid = False
        else:
            valid = cursor is None or cursor.position is None or self._valid_position(cursor.position)
        if not valid:
            raise ValidationError({self.cursor_query_param: "is not a cursor this list gave out"})
        return cursor

    def _valid_position(self, position: str) -> bool:
        # The position is the first ordering field's value: created_at or id.
        if self.ordering[0].lstrip("-") == "id":
            return bool(re.fullmatch(r"[0-9]{1,19}", position))
        try:
            return parse_datetime(position) is not None
        except ValueError:  # well-formed, but no such date
            return False

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
        return parameters


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))")
_RFC3339_HELP = "an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z"


def _refusal(message: str) -> forms.ValidationError:
    """A filter value's refusal. Its message quotes what the client sent, and
    django-filter %-formats messages: a client's "%" must stay text, not a 500."""
    return forms.ValidationError(message.replace("%", "%%"))


class RFC3339Field(forms.Field):
    """An RFC 3339 date-time, returned in UTC (Postgres refuses offsets beyond ±15:59)."""

    def to_python(self, value):
        if value is None:  # not given; given empty is an error, like any other non-date
            return None
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise _refusal(f"{value!r} is not {_RFC3339_HELP}")
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
        offset = timedelta(0) if zulu else timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        if sign == "-":
            offset = -offset
        if not (1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 60) or abs(offset) >= timedelta(
            hours=24
        ):
            raise _refusal(f"{value!r} is not {_RFC3339_HELP}")
        try:
            # Year 0 is valid RFC 3339 but not a Python date: check the day in a leap year like it.
            datetime(year or 2000, month, day)
        except ValueError:
            raise _refusal(f"{value!r} is not {_RFC3339_HELP}") from None
        if year == 0:
            return datetime.min.replace(tzinfo=UTC)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        leap = second == 60
        moment = datetime(year, month, day, hour, minute, min(second, 59), micro, timezone(offset))
        try:
            utc = moment.astimezone(UTC)
        except OverflowError:  # within a day of year 1 or 9999: clamp
            return datetime.min.replace(tzinfo=UTC) if year < 5000 else datetime.max.replace(tzinfo=UTC)
        if leap and (utc.hour, utc.minute) != (23, 59):
            raise _refusal(f"{value!r}: a leap second is only at 23:59:60 UTC")
        return utc


@extend_schema_field({"type": "string", "format": "date-time"})
class DateTimeFilter(filters.Filter):
    field_class = RFC3339Field


class StrictBooleanField(forms.Field):
    def to_python(self, value):
        if value is None:
            return None
        if value not in ("true", "false"):
            raise _refusal(f"{value!r} is not true or false")
        return value == "true"


@extend_schema_field({"type": "boolean"})
class BooleanFilter(filters.BooleanFilter):
    field_class = StrictBooleanField


class StrictIntegerField(forms.IntegerField):
    def to_python(self, value):
        if value is None:
            return None
        if not re.fullmatch(r"-?[0-9]{1,19}", str(value)):
            raise _refusal(f"{value!r} is not an integer")
        return super().to_python(value)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_INT})
class VersionNumberFilter(filters.NumberFilter):
    field_class = StrictIntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, min_value=1, max_value=MAX_INT, **kwargs)


class StrictChoiceField(FilterChoiceField):
    def clean(self, value):
        if value == "":  # given but empty: not one of the choices (absent is None)
            raise _refusal(f"'' is not one of {', '.join(str(k) for k, _ in self.choices if k)}")
        return super().clean(value)


class ChoiceFilter(filters.ChoiceFilter):
    field_class = StrictChoiceField


class ModelFilter(filters.FilterSet):
    name = filters.CharFilter(help_text="Exact name")
    name_contains = filters.CharFilter(field_name="name", lookup_expr="icontains")
    task_kind = ChoiceFilter(choices=TaskKind.choices)

    class Meta:
        model = Model
        fields = ["name", "name_contains", "task_kind"]


class VersionFilter(filters.FilterSet):
    backend = filters.CharFilter()
    platform = filters.CharFilter()
    sha256 = filters.CharFilter()
    git_commit = filters.CharFilter()
    created_after = DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = ModelVersion
        fields = ["backend", "platform", "sha256", "git_commit", "created_after", "created_before"]


class AliasMoveFilter(filters.FilterSet):
    alias = filters.CharFilter()

    class Meta:
        model = AliasMove
        fields = ["alias"]


class ServerFilter(filters.FilterSet):
    enabled = BooleanFilter()
    live = BooleanFilter()
    ready = BooleanFilter()
    label = filters.CharFilter(method="filter_label", help_text="Servers having this label")

    class Meta:
        model = InferenceServer
        fields = ["enabled", "live", "ready", "label"]

    def filter_label(self, queryset, name, value):
        # JSON containment is Postgres-only; the server list is short, so filter ids in Python.
        ids = [pk for pk, labels in queryset.values_list("pk", "labels") if value in (labels or [])]
        return queryset.filter(pk__in=ids)


class DeploymentFilter(filters.FilterSet):
    model = filters.CharFilter(field_name="version__model__name", help_text="Model name")
    version = VersionNumberFilter(field_name="version__number")
    server = filters.CharFilter(field_name="server__name", help_text="Server name")
    desired = ChoiceFilter(choices=DesiredState.choices)
    observed = ChoiceFilter(choices=ObservedState.choices)

    class Meta:
        model = Deployment
        fields = ["model", "version", "server", "desired", "observed"]


class AuditFilter(filters.FilterSet):
    action = filters.CharFilter(help_text="Exact action, e.g. version.register")
    action_prefix = filters.CharFilter(field_name="action", lookup_expr="startswith", help_text="e.g. deployment.")
    actor = filters.CharFilter(help_text="e.g. token:ci-main or user:alice")
    source = ChoiceFilter(choices=Source.choices)
    object_type = filters.CharFilter(help_text="e.g. registry.model")
    object_id = filters.CharFilter()
    since = DateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "action_prefix", "actor", "source", "object_type", "object_id", "since", "until"]


class StrictOrderingFilter(OrderingFilter):
    """?ordering= refuses a field it does not know, like every other parameter,
    instead of DRF's silent fallback to the default order."""

    def get_ordering(self, request, queryset, view):
        raw = request.query_params.get(self.ordering_param)
        if raw is None:
            return self.get_default_ordering(view)
        allowed = [field for field, _ in self.get_valid_fields(queryset, view, {"request": request})]
        terms = raw.split(",")
        unknown = [term for term in terms if term.removeprefix("-") not in allowed]
        if unknown:
            raise ValidationError(
                {
                    self.ordering_param: f"cannot order by {', '.join(repr(t) for t in unknown)}; "
                    f"use {_ordering_help(allowed)}"
                }
            )
        return terms

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        allowed = [f if isinstance(f, str) else f[0] for f in getattr(view, "ordering_fields", None) or []]
        if allowed:
            term = f"-?(?:{'|'.join(re.escape(f) for f in allowed)})"
            for parameter in parameters:
                parameter["description"] = f"Order by {_ordering_help(allowed)}"
                parameter["schema"]["pattern"] = f"^{term}(?:,{term})*$"
        return parameters


def _ordering_help(allowed: list[str]) -> str:
    return f"one or more of {', '.join(allowed)}, comma-separated; a leading '-' for descending"
