"""Canaries over the REST API: PUT …/aliases/{alias}/canary/ starts one or changes its
weight, POST …/canary/promote/ and …/canary/abort/ end it; the deploy scope, tokens
restricted to their models, and the errors (400 naming the field, 404, 409)."""

import pytest

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import Alias, AliasMove
from modelhub.registry.services import move_alias
from tests.api.conftest import error_of
from tests.registry.test_canary import make_model

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/{model}/aliases/{alias}/canary/"


@pytest.fixture
def models(db):
    """digits and faces, three versions each, production -> v1."""
    made = {}
    for name in ("digits", "faces"):
        made[name] = make_model(name)
        move_alias(made[name], "production", made[name].versions.get(number=1), Actor(source=Source.CLI))
    return made


def put_canary(client, body, model="digits", alias="production"):
    return client.put(URL.format(model=model, alias=alias), body, format="json")


def post(client, what: str, model="digits", alias="production"):
    return client.post(URL.format(model=model, alias=alias) + f"{what}/", format="json")


def production(model="digits") -> Alias:
    return Alias.objects.select_related("version", "canary_version").get(model__name=model, name="production")


def test_start_change_and_promote_a_canary_the_alias_showing_it(models, client_with):
    api = client_with("deploy")

    started = put_canary(api, {"version": 2, "weight": 10})
    reweighed = put_canary(api, {"version": 2, "weight": 50})
    shown = api.get("/api/v1/models/digits/aliases/production/").json()
    promoted = post(api, "promote")

    assert started.status_code == 200
    assert (started.json()["version"], started.json()["canary_version"], started.json()["canary_weight"]) == (1, 2, 10)
    assert reweighed.json()["canary_weight"] == 50
    assert (shown["canary_version"], shown["canary_weight"]) == (2, 50)
    assert promoted.status_code == 200
    assert (promoted.json()["version"], promoted.json()["canary_version"], promoted.json()["canary_weight"]) == (
        2,
        None,
        0,
    )
    move = AliasMove.objects.first()
    assert (move.from_version.number, move.to_version.number, move.moved_by) == (1, 2, "token:ci")
    actions = list(AuditEvent.objects.filter(source=Source.API).order_by("id").values_list("action", flat=True))
    assert actions == ["alias.canary.start", "alias.canary.weight", "alias.canary.promote", "alias.move"]


def test_abort_sends_everything_back_to_the_alias_version(models, client_with):
    api = client_with("deploy")
    put_canary(api, {"version": 3, "weight": 20})

    response = post(api, "abort")

    assert response.status_code == 200
    assert (response.json()["version"], response.json()["canary_version"], response.json()["canary_weight"]) == (
        1,
        None,
        0,
    )
    assert AuditEvent.objects.filter(action="alias.canary.abort", source=Source.API).count() == 1


@pytest.mark.parametrize(
    "body, field, text",
    [
        ({"version": 2, "weight": 0}, "weight", "greater than or equal to 1"),
        ({"version": 2, "weight": 100}, "weight", "less than or equal to 99"),
        ({"version": 2, "weight": "10"}, "weight", "A valid integer is required"),
        ({"weight": 10}, "version", "required"),
        ({"version": 9, "weight": 10}, "version", "model 'digits' has no version 9"),
        ({"version": 1, "weight": 10}, "version", "digits@production already points at v1: pick another version"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(models, client_with, body, field, text):
    response = put_canary(client_with("deploy"), body)

    assert response.status_code == 400
    error = error_of(response)
    assert field in error["fields"] and text in error["fields"][field]
    assert production().canary_version is None
    assert not AuditEvent.objects.filter(action__startswith="alias.canary").exists()


def test_state_conflicts_are_409_saying_why(models, client_with):
    api = client_with("deploy")

    no_canary = [post(api, "promote"), post(api, "abort")]
    put_canary(api, {"version": 2, "weight": 10})
    second = put_canary(api, {"version": 3, "weight": 10})

    for response in no_canary:
        assert response.status_code == 409
        assert error_of(response)["message"] == "digits@production has no canary running"
    assert second.status_code == 409
    assert "already has a canary running (v2 at 10 %): promote or abort it first" in error_of(second)["message"]
    assert production().canary_version.number == 2


def test_an_unknown_alias_or_model_is_a_404(models, client_with):
    api = client_with("deploy")

    assert put_canary(api, {"version": 2, "weight": 10}, alias="staging").status_code == 404
    assert post(api, "promote", alias="staging").status_code == 404
    assert post(api, "abort", model="nothing").status_code == 404


@pytest.mark.parametrize("scopes", [("read",), ("upload",)])
def test_without_the_deploy_scope_every_canary_call_is_403_and_nothing_changes(models, client_with, scopes):
    api = client_with(*scopes)

    answers = [put_canary(api, {"version": 2, "weight": 10}), post(api, "promote"), post(api, "abort")]

    assert [r.status_code for r in answers] == [403, 403, 403]
    assert "lacks the 'deploy' scope" in error_of(answers[0])["message"]
    assert production().canary_version is None


def test_a_viewer_session_is_refused_an_operator_session_allowed(models, session_client):
    refused = put_canary(session_client("viewer"), {"version": 2, "weight": 10})
    allowed = put_canary(session_client("operator"), {"version": 2, "weight": 10})

    assert refused.status_code == 403 and "your role does not allow 'deploy'" in error_of(refused)["message"]
    assert allowed.status_code == 200
    assert AuditEvent.objects.get(action="alias.canary.start").source == Source.UI  # a session, not a token


def test_a_restricted_token_runs_canaries_on_its_models_only(models, client_with):
    api = client_with("deploy", models=["digits"])

    own = put_canary(api, {"version": 2, "weight": 10})
    other = put_canary(api, {"version": 2, "weight": 10}, model="faces")

    assert own.status_code == 200
    assert other.status_code == 404
    assert production("faces").canary_version is None
