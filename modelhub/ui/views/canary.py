"""The canary comparison page: an alias's stable version and its canary side by side over a
window (latency, requests and failures, outputs), with the charts overlaid, and for the deploy
role the forms that reweigh, promote or abort the canary (posted to the catalog's views)."""

from django.shortcuts import get_object_or_404, render

from modelhub.access.roles import Scope
from modelhub.registry.models import Model
from modelhub.ui.access import require_scope
from modelhub.ui.canary import NoCanary, compare, find_alias
from modelhub.ui.views.charts import RANGES, time_range

DEFAULT_RANGE = "1h"  # what watching a canary that has just started needs


@require_scope(Scope.READ)
def canary_compare(request, name: str, alias: str):
    model = get_object_or_404(Model, name=name)
    try:
        row = find_alias(model, alias)
    except LookupError:
        return render(request, "ui/catalog/canary_compare.html", {"model": model, "missing": alias}, status=404)
    chosen = request.GET.get("range", DEFAULT_RANGE)
    context = {"model": model, "alias": row, "ranges": list(RANGES), "range": chosen}
    # Presets only: the charts open with the page's range and have their own selector besides.
    if chosen not in RANGES:
        context["error"] = f"range: {chosen!r} is not one of {', '.join(RANGES)}"
        return render(request, "ui/catalog/canary_compare.html", context, status=400)
    start, end = time_range({"range": chosen})
    try:
        context["output_name"], context["figures"] = compare(row, start, end)
    except NoCanary as exc:
        context["no_canary"] = str(exc)
    context["window"] = (start, end)
    return render(request, "ui/catalog/canary_compare.html", context)
