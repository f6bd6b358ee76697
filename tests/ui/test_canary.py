"""Canary controls on the model page: the status per alias, and for the deploy role the
forms that start one, change its weight, promote and abort it, through the registry's
services (audited as the UI); viewers see no forms and a forged POST changes nothing."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import Alias, AliasMove, Model
from modelhub.registry.services import move_alias, start_canary
from tests.registry.test_canary import make_model

pytestmark = pytest.mark.django_db

CLI = Actor(source=Source.CLI)
FORMS = ("canary-start-production", "canary-promote-production", "canary-abort-production")


@pytest.fixture
def model(db) -> Model:
    model = make_model("digits")
    move_alias(model, "production", model.versions.get(number=1), CLI)
    return model


def url(action: str, alias: str = "production") -> str:
    name = {"start": "ui:alias-canary", "promote": "ui:alias-canary-promote", "abort": "ui:alias-canary-abort"}
    return reverse(name[action], kwargs={"name": "digits", "alias": alias})


def page(client):
    return client.get(reverse("ui:model-detail", kwargs={"name": "digits"}))


def production() -> Alias:
    return Alias.objects.select_related("version", "canary_version").get(model__name="digits", name="production")


def flash(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def ui_audit(action: str) -> int:
    return AuditEvent.objects.filter(action=action, source=Source.UI).count()


def test_the_page_shows_the_running_canary_and_its_share(model, client_as):
    start_canary(model, "production", model.versions.get(number=2), 10, CLI)

    response = page(client_as("viewer"))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="canary-production"' in html
    assert "v2</a> gets 10 %" in html


def test_a_viewer_sees_the_status_but_no_canary_form(model, client_as):
    html = page(client_as("viewer")).content.decode()
    start_canary(model, "production", model.versions.get(number=2), 10, CLI)
    running = page(client_as("viewer")).content.decode()

    assert "no canary" in html
    for testid in FORMS:
        assert f'data-testid="{testid}"' not in html + running


def test_an_operator_sees_start_and_then_promote_and_abort(model, client_as):
    operator = client_as("operator")
    idle = page(operator).content.decode()
    start_canary(model, "production", model.versions.get(number=2), 10, CLI)
    running = page(operator).content.decode()

    assert 'data-testid="canary-start-production"' in idle and 'data-testid="canary-promote-production"' not in idle
    assert 'data-testid="canary-promote-production"' in running and 'data-testid="canary-abort-production"' in running
    assert 'data-confirm="Promote canary v2' in running
    # The start form offers the other versions, not the alias's own.
    start_form = re.search(r'<form[^>]*data-testid="canary-start-production".*?</form>', idle, re.S).group(0)
    assert re.findall(r'<option value="(\d+)">', start_form) == ["3", "2"]


def test_an_operator_starts_reweighs_and_promotes_a_canary(model, client_as):
    operator = client_as("operator")

    started = operator.post(url("start"), {"version": 2, "weight": 10}, follow=True)
    reweighed = operator.post(url("start"), {"version": 2, "weight": 40}, follow=True)
    after_weight = production().canary_weight
    promoted = operator.post(url("promote"), follow=True)

    assert started.redirect_chain[0] == (reverse("ui:model-detail", kwargs={"name": "digits"}), 302)
    assert flash(started) == ["digits@production: canary v2 gets 10 %"]
    assert flash(reweighed) == ["digits@production: canary v2 gets 40 %"]
    assert after_weight == 40
    assert flash(promoted) == ["digits@production promoted its canary: it now points at v2"]
    alias = production()
    assert (alias.version.number, alias.canary_version, alias.canary_weight) == (2, None, 0)
    assert AliasMove.objects.first().moved_by == "user:operator-person"
    for action in ("alias.canary.start", "alias.canary.weight", "alias.canary.promote", "alias.move"):
        assert ui_audit(action) == 1, action


def test_an_operator_aborts_a_canary(model, client_as):
    start_canary(model, "production", model.versions.get(number=3), 25, CLI)

    response = client_as("operator").post(url("abort"), follow=True)

    assert flash(response) == ["digits@production: canary aborted, v1 gets all the traffic"]
    assert production().canary_version is None
    assert ui_audit("alias.canary.abort") == 1


@pytest.mark.parametrize(
    "action, data, text",
    [
        ("start", {"version": 2, "weight": 0}, "weight: must be 1-99 (percent of the traffic the canary gets); 0 is"),
        ("start", {"version": 2, "weight": 100}, "weight: must be 1-99"),
        ("start", {"version": 2}, "weight: This field is required."),
        ("start", {"version": 9, "weight": 10}, "version: model 'digits' has no version 9"),
        ("start", {"version": 1, "weight": 10}, "version: digits@production already points at v1"),
        ("promote", {}, "digits@production: digits@production has no canary running"),
        ("abort", {}, "has no canary running"),
    ],
)
def test_a_refused_change_says_why_and_writes_nothing(model, client_as, action, data, text):
    response = client_as("operator").post(url(action), data, follow=True)

    assert response.status_code == 200
    assert any(text in message for message in flash(response)), flash(response)
    assert production().canary_version is None
    assert not AuditEvent.objects.filter(action__startswith="alias.canary").exists()


def test_a_second_canary_is_refused_naming_the_running_one(model, client_as):
    start_canary(model, "production", model.versions.get(number=2), 10, CLI)

    response = client_as("operator").post(url("start"), {"version": 3, "weight": 10}, follow=True)

    assert flash(response) == [
        "digits@production: digits@production already has a canary running (v2 at 10 %): promote or abort it first"
    ]
    assert production().canary_version.number == 2


def test_an_unknown_alias_is_named(model, client_as):
    response = client_as("operator").post(url("start", alias="staging"), {"version": 2, "weight": 10}, follow=True)

    assert flash(response) == ["digits@staging: model 'digits' has no alias 'staging'"]


@pytest.mark.parametrize("action", ["start", "promote", "abort"])
def test_a_forged_viewer_post_is_403_and_changes_nothing(model, client_as, action):
    start_canary(model, "production", model.versions.get(number=2), 10, CLI)
    before = AuditEvent.objects.count()

    response = client_as("viewer").post(url(action), {"version": 3, "weight": 50})

    assert response.status_code == 403
    alias = production()
    assert (alias.version.number, alias.canary_version.number, alias.canary_weight) == (1, 2, 10)
    assert AuditEvent.objects.count() == before


def test_anonymous_is_sent_to_sign_in_and_a_get_is_refused(model, client_as):
    anonymous = Client().post(url("start"), {"version": 2, "weight": 10})
    get = client_as("operator").get(url("start"))

    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("ui:login"))
    assert get.status_code == 405
    assert production().canary_version is None
