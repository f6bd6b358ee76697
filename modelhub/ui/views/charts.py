"""Chart data: the JSON a chart on a page fetches (and re-fetches when its range changes)."""

from datetime import UTC, datetime, timedelta

from django.http import JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from modelhub.access.roles import Scope
from modelhub.ui.access import require_scope
from modelhub.ui.charts import CHARTS, BadParameter, BadTarget, NoSuchTarget, build_chart

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RANGE = "24h"
MAX_CUSTOM_RANGE = timedelta(days=400)  # what hour roll-ups are kept for, by default


class BadQuery(ValueError):
    """A query parameter the chart cannot use; its text names the parameter."""


@require_GET
@require_scope(Scope.READ)
def chart_data(request, chart):
    if chart not in CHARTS:
        return _error(400, f"chart: unknown chart {chart!r}; known: {', '.join(CHARTS)}")
    try:
        start, end = time_range(request.GET)
        figure = build_chart(CHARTS[chart], request.GET.get("target", ""), start, end, request.GET)
    except BadTarget as exc:
        return _error(400, f"target: {exc}")
    except (BadQuery, BadParameter) as exc:
        return _error(400, str(exc))
    except NoSuchTarget as exc:
        return _error(404, f"target: {exc}")
    return JsonResponse(figure)


def time_range(params, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) from `range` (1h, 24h, 7d, 30d: ending now) or a custom `start` and `end`."""
    if "start" in params or "end" in params:
        if params.get("range", "custom") != "custom":
            raise BadQuery("range: give either range or start and end, not both")
        start, end = _moment(params, "start"), _moment(params, "end")
        if end <= start:
            raise BadQuery(f"end: must be after start ({end.isoformat()} is not after {start.isoformat()})")
        if end - start > MAX_CUSTOM_RANGE:
            raise BadQuery(f"start: the range from start to end may span at most {MAX_CUSTOM_RANGE.days} days")
        return start, end
    name = params.get("range", DEFAULT_RANGE)
    if name not in RANGES:
        raise BadQuery(f"range: {name!r} is not one of {', '.join(RANGES)} (or give start and end)")
    end = now or timezone.now()
    return end - RANGES[name], end


def _moment(params, name: str) -> datetime:
    raw = params.get(name)
    if not raw:
        raise BadQuery(f"{name}: required with a custom range (an ISO 8601 time, e.g. 2026-01-31T12:00:00Z)")
    try:
        moment = parse_datetime(raw.strip())
    except ValueError:
        moment = None
    if moment is None:
        raise BadQuery(f"{name}: {raw!r} is not an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")
    # A time without offset is read as UTC, as the axis shows.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)
