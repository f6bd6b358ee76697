"""Canaries on an alias: start, reweigh, promote, abort through registry.services, each
audited, each refusal naming what is wrong and changing nothing."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from modelhub.audit.models import AuditEvent
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion
from modelhub.registry.services import (
    CanaryConflict,
    InUse,
    abort_canary,
    delete_version_rows,
    move_alias,
    promote_canary,
    set_canary_weight,
    start_canary,
)

pytestmark = pytest.mark.django_db


def make_model(name: str, versions: int = 3) -> Model:
    """A model with version rows only: the canary services never open an artifact."""
    model = Model.objects.create(name=name, last_version_number=versions)
    ModelVersion.objects.bulk_create(
        ModelVersion(
            model=model,
            number=n,
            artifact=f"{name}/{n:064x}.zip",
            artifact_format="zip",
            sha256=f"{n:064x}",
            size=10,
            backend="python",
        )
        for n in range(1, versions + 1)
    )
    return model


@pytest.fixture
def model(actor) -> Model:
    model = make_model("digits")
    move_alias(model, "production", v(model, 1), actor)
    return model


def v(model: Model, number: int) -> ModelVersion:
    return model.versions.get(number=number)


def production(model: Model) -> Alias:
    return Alias.objects.select_related("version", "canary_version").get(model=model, name="production")


def audit(action: str) -> list[dict]:
    return list(AuditEvent.objects.filter(action=action).order_by("id").values_list("details", flat=True))


def test_starting_a_canary_sets_version_and_weight_and_is_audited(model, actor):
    alias = start_canary(model, "production", v(model, 2), 10, actor)

    stored = production(model)
    assert (stored.version.number, stored.canary_version.number, stored.canary_weight) == (1, 2, 10)
    assert alias.canary_weight == 10
    assert audit("alias.canary.start") == [{"alias": "production", "version": 1, "canary_version": 2, "weight": 10}]
    assert AliasMove.objects.count() == 1  # only the alias's creation: a canary is not a move


def test_the_weight_changes_while_the_canary_runs(model, actor):
    start_canary(model, "production", v(model, 2), 10, actor)

    set_canary_weight(model, "production", 50, actor)
    set_canary_weight(model, "production", 50, actor)  # the same weight again: nothing to record

    assert production(model).canary_weight == 50
    assert audit("alias.canary.weight") == [
        {"alias": "production", "canary_version": 2, "from_weight": 10, "weight": 50}
    ]


def test_promoting_moves_the_alias_to_the_canary_with_a_move_row_and_ends_the_canary(model, actor):
    start_canary(model, "production", v(model, 2), 30, actor)

    alias = promote_canary(model, "production", actor)

    stored = production(model)
    assert (stored.version.number, stored.canary_version, stored.canary_weight) == (2, None, 0)
    assert alias.version.number == 2
    move = AliasMove.objects.first()  # newest first
    assert (move.from_version.number, move.to_version.number, move.alias) == (1, 2, "production")
    assert audit("alias.canary.promote") == [{"alias": "production", "from_version": 1, "to_version": 2, "weight": 30}]
    assert audit("alias.move")[-1]["canary_promoted_at_weight"] == 30


def test_aborting_clears_the_canary_and_leaves_the_alias_where_it_was(model, actor):
    start_canary(model, "production", v(model, 3), 5, actor)

    abort_canary(model, "production", actor)

    stored = production(model)
    assert (stored.version.number, stored.canary_version, stored.canary_weight) == (1, None, 0)
    assert audit("alias.canary.abort") == [{"alias": "production", "version": 1, "canary_version": 3, "weight": 5}]
    assert AliasMove.objects.count() == 1


def test_moving_the_alias_onto_its_canary_ends_the_canary(model, actor):
    start_canary(model, "production", v(model, 2), 10, actor)

    move_alias(model, "production", v(model, 2), actor)

    stored = production(model)
    assert (stored.version.number, stored.canary_version, stored.canary_weight) == (2, None, 0)


def test_moving_the_alias_elsewhere_keeps_the_canary_running(model, actor):
    start_canary(model, "production", v(model, 2), 10, actor)

    move_alias(model, "production", v(model, 3), actor)

    stored = production(model)
    assert (stored.version.number, stored.canary_version.number, stored.canary_weight) == (3, 2, 10)


@pytest.mark.parametrize("weight", [0, 100, -5, 250])
def test_a_weight_outside_1_to_99_is_refused_naming_the_weight(model, actor, weight):
    with pytest.raises(ValidationError) as refused:
        start_canary(model, "production", v(model, 2), weight, actor)

    assert "must be 1-99" in refused.value.message_dict["weight"][0]
    assert production(model).canary_version is None
    assert not audit("alias.canary.start")


def test_the_canary_cannot_be_the_alias_own_version(model, actor):
    with pytest.raises(ValidationError) as refused:
        start_canary(model, "production", v(model, 1), 10, actor)

    assert refused.value.message_dict["version"] == ["digits@production already points at v1: pick another version"]


def test_the_canary_must_be_a_version_of_the_same_model(model, actor):
    other = make_model("faces", versions=1)

    with pytest.raises(ValidationError) as refused:
        start_canary(model, "production", v(other, 1), 10, actor)

    assert "does not belong to model digits" in refused.value.message_dict["version"][0]
    assert production(model).canary_version is None


def test_a_missing_alias_is_named(model, actor):
    with pytest.raises(Alias.DoesNotExist, match="model 'digits' has no alias 'staging'"):
        start_canary(model, "staging", v(model, 2), 10, actor)
    with pytest.raises(Alias.DoesNotExist, match="has no alias 'staging'"):
        promote_canary(model, "staging", actor)


@pytest.mark.parametrize("transition", ["weight", "promote", "abort"])
def test_without_a_running_canary_weight_promote_and_abort_are_refused(model, actor, transition):
    calls = {
        "weight": lambda: set_canary_weight(model, "production", 20, actor),
        "promote": lambda: promote_canary(model, "production", actor),
        "abort": lambda: abort_canary(model, "production", actor),
    }
    before = AuditEvent.objects.count()

    with pytest.raises(CanaryConflict, match="digits@production has no canary running"):
        calls[transition]()

    assert AuditEvent.objects.count() == before
    assert production(model).version.number == 1 and AliasMove.objects.count() == 1


def test_a_second_canary_is_refused_while_one_runs(model, actor):
    start_canary(model, "production", v(model, 2), 10, actor)

    with pytest.raises(CanaryConflict, match=r"already has a canary running \(v2 at 10 %\): promote or abort it"):
        start_canary(model, "production", v(model, 3), 20, actor)

    assert production(model).canary_version.number == 2


def test_a_canary_version_cannot_be_deleted(model, actor):
    start_canary(model, "production", v(model, 2), 10, actor)

    with pytest.raises(InUse, match="digits v2 is the canary of production: promote or abort the canary first"):
        delete_version_rows(v(model, 2), actor)


def test_the_database_refuses_an_inconsistent_canary(model):
    alias = production(model)
    for version, weight in ((v(model, 2), 0), (None, 10), (alias.version, 10)):
        with pytest.raises(IntegrityError), transaction.atomic():
            Alias.objects.filter(pk=alias.pk).update(canary_version=version, canary_weight=weight)
