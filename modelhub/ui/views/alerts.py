"""Alerts and alert rules: read by every role, acknowledged, silenced and edited with
deploy scope (operators), as the API's AlertViewSet and AlertRuleViewSet allow.

Every write goes through `modelhub.alerts.services`, which audits it; a refused
write (the service's ValidationError) is shown in the service's own words.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Prefetch, Value, When
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from modelhub.access.roles import Scope
from modelhub.alerts import services
from modelhub.alerts.links import target_path
from modelhub.alerts.models import Alert, AlertRule, AlertState, Flip, Notification
from modelhub.api.alerts_views import DETAIL_FLIPS
from modelhub.ui.access import require_scope, ui_actor
from modelhub.ui.forms.alerts import QUICK_SILENCES, AlertFilterForm, AlertRuleForm, SilenceForm
from modelhub.ui.helpers import form_errors, next_url, refusal_text

ALERTS_PER_PAGE = 50
RULES_PER_PAGE = 100


def _alerts():
    # Firing first (for "all"), then the most recent change.
    firing_first = Case(When(state=AlertState.FIRING, then=Value(0)), default=Value(1), output_field=IntegerField())
    return Alert.objects.select_related("rule", "server", "model", "version__model", "acknowledged_by").order_by(
        firing_first, "-since", "-id"
    )


def _for_display(alerts) -> list[Alert]:
    """Each alert with the page of its target and whether it is silenced now (for the templates)."""
    now = timezone.now()
    alerts = list(alerts)
    for alert in alerts:
        alert.target_path = target_path(alert)
        alert.silenced = alert.is_silenced(now)
    return alerts


def _back(request, alert: Alert):
    """Back to the page the form was on (a `next` of this site only), else the alert's page."""
    return redirect(next_url(request, reverse("ui:alert-detail", kwargs={"pk": alert.pk})))


@require_scope(Scope.READ)
def alert_list(request):
    filters = AlertFilterForm(request.GET or None)
    page = Paginator(filters.filter(_alerts()), ALERTS_PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = _for_display(page.object_list)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "ui/alerts/alert_list.html",
        {
            "filters": filters,
            "state": filters.chosen_state(),
            "page": page,
            "query": query.urlencode(),
            "quick_silences": QUICK_SILENCES,
        },
    )


@require_scope(Scope.READ)
def alert_detail(request, pk: int):
    flips = Flip.objects.order_by("-created_at", "-id").prefetch_related(
        Prefetch("notifications", Notification.objects.order_by("id"))
    )
    (alert,) = _for_display([get_object_or_404(_alerts(), pk=pk)])
    return render(
        request,
        "ui/alerts/alert_detail.html",
        {
            "alert": alert,
            "flips": list(flips.filter(alert=alert)[:DETAIL_FLIPS]),
            "flips_shown": DETAIL_FLIPS,
            "quick_silences": QUICK_SILENCES,
        },
    )


@require_POST
@require_scope(Scope.DEPLOY)
def alert_acknowledge(request, pk: int):
    alert = get_object_or_404(Alert, pk=pk)
    try:
        services.acknowledge(alert, ui_actor(request))
    except ValidationError as refused:
        messages.error(request, f"Not acknowledged: {refusal_text(refused)}")
    else:
        what = f"{alert.rule.name} on {alert.target_label}"
        messages.success(request, f"Acknowledged {what}: no reminders until it resolves.")
    return _back(request, alert)


@require_POST
@require_scope(Scope.DEPLOY)
def alert_silence(request, pk: int):
    alert = get_object_or_404(Alert, pk=pk)
    form = SilenceForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not silenced: {form_errors(form)}")
        return _back(request, alert)
    try:
        services.silence(alert, form.silence_until, ui_actor(request))
    except ValidationError as refused:
        messages.error(request, f"Not silenced: {refusal_text(refused)}")
    else:
        until = form.silence_until.strftime("%Y-%m-%d %H:%M UTC")
        messages.success(request, f"Silenced {alert.rule.name} on {alert.target_label} until {until}.")
    return _back(request, alert)


@require_POST
@require_scope(Scope.DEPLOY)
def alert_unsilence(request, pk: int):
    alert = get_object_or_404(Alert, pk=pk)
    services.unsilence(alert, ui_actor(request))
    messages.success(request, f"{alert.rule.name} on {alert.target_label} is no longer silenced.")
    return _back(request, alert)


@require_scope(Scope.READ)
def rule_list(request):
    rules = AlertRule.objects.select_related("model", "server").prefetch_related("groups")
    page = Paginator(rules, RULES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "ui/alerts/rule_list.html", {"page": page})


def _save_rule(request, form: AlertRuleForm, rule: AlertRule | None):
    """The service's write; its refusal becomes the form's errors (field by field)."""
    try:
        if rule is None:
            fields = form.service_fields()
            return services.create_rule(ui_actor(request), groups=fields.pop("groups"), **fields)
        return services.update_rule(rule, ui_actor(request), **form.service_fields())
    except ValidationError as refused:
        form.add_error(None, refused)
        return None


def _rule_form_page(request, rule: AlertRule | None):
    form = AlertRuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        saved = _save_rule(request, form, rule)
        if saved is not None:
            messages.success(request, f"Alert rule {saved.name!r} {'created' if rule is None else 'saved'}.")
            return redirect("ui:rule-list")
    status = 400 if form.errors else 200
    return render(request, "ui/alerts/rule_form.html", {"form": form, "rule": rule}, status=status)


@require_scope(Scope.DEPLOY)
def rule_create(request):
    return _rule_form_page(request, None)


@require_scope(Scope.DEPLOY)
def rule_edit(request, pk: int):
    return _rule_form_page(request, get_object_or_404(AlertRule, pk=pk))


@require_POST
@require_scope(Scope.DEPLOY)
def rule_delete(request, pk: int):
    rule = get_object_or_404(AlertRule, pk=pk)
    services.delete_rule(rule, ui_actor(request))
    messages.success(request, f"Alert rule {rule.name!r} deleted, with its alerts and their history.")
    return redirect(reverse("ui:rule-list"))
