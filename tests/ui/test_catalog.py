"""The models pages: the list with its search, filters and pages; one model's page; and
promoting and rolling back aliases from it, through the registry's services (audited as
the UI), for each role."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from modelhub.alerts.models import Alert, AlertState
from modelhub.alerts.services import create_rule
from modelhub.audit.models import AuditEvent, Source
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion, TaskKind
from modelhub.registry.services import delete_version_rows, move_alias
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState

pytestmark = pytest.mark.django_db


# --- the world --------------------------------------------------------------------------------


def make_model(name: str, versions: int = 1, **fields) -> Model:
    """A model with `versions` version rows (the pages read rows; no artifact is opened)."""
    model = Model.objects.create(name=name, last_version_number=versions, **fields)
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


def version(model: Model, number: int) -> ModelVersion:
    return model.versions.get(number=number)


@pytest.fixture
def server(db) -> InferenceServer:
    return InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")


def deploy(model_version: ModelVersion, server: InferenceServer, observed: str, error: str = "") -> Deployment:
    return Deployment.objects.create(version=model_version, server=server, observed=observed, last_error=error)


def fire_alert(model: Model, deployment: Deployment, actor) -> Alert:
    rule = create_rule(actor, name=f"{model.name} not ready", signal="model_not_ready", scope="global")
    return Alert.objects.create(
        rule=rule,
        target=f"deployment:{deployment.pk}",
        target_label=f"{model.name} on {deployment.server.name}",
        deployment=deployment,
        version=deployment.version,
        model=model,
        state=AlertState.FIRING,
        since=timezone.now(),
        last_message="model is not ready: UNAVAILABLE",
    )


@pytest.fixture
def digits(server, actor, make_person) -> Model:
    """digits: 3 versions, production moved v1 -> v2 by ann, a failed v3 on gpu-1 with a firing alert."""
    ann = make_person("ann", "operator")
    model = make_model(
        "digits", 3, description="handwritten digit classifier", task_kind=TaskKind.CLASSIFICATION, latency_slo_ms=25
    )
    model.owners.add(ann)
    move_alias(model, "production", version(model, 1), actor)
    move_alias(model, "production", version(model, 2), actor)
    deploy(version(model, 2), server, ObservedState.LOADED)
    failed = deploy(version(model, 3), server, ObservedState.FAILED, "failed to load 'digits' version 3: bad config")
    fire_alert(model, failed, actor)
    CheckResult.objects.create(
        kind=CheckKind.ACCURACY, status=Status.OK, version=version(model, 2), server=server, value=0.9731
    )
    CheckResult.objects.create(
        kind=CheckKind.MODEL_READY, status=Status.FAIL, deployment=failed, server=server, message="UNAVAILABLE"
    )
    return model


def page_of(response) -> str:
    assert response.status_code == 200, (response.status_code, response.content[:500])
    return response.content.decode()


def rows(page: str, testid: str = "model-row") -> list[str]:
    """The data-model / data-version values of the rows, in page order."""
    attribute = "data-model" if testid == "model-row" else "data-version"
    return re.findall(rf'data-testid="{testid}" {attribute}="([^"]+)"', page)


def row_html(page: str, model_name: str) -> str:
    start = page.index(f'data-model="{model_name}"')
    return page[start : page.index("</tr>", start)]


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def model_list(client, **query):
    return client.get(reverse("ui:model-list"), query)


# --- the list ---------------------------------------------------------------------------------


def test_the_list_shows_each_models_versions_aliases_deployments_and_alerts(client_as, digits):
    make_model("faces", 1, task_kind=TaskKind.REGRESSION)

    page = page_of(model_list(client_as("viewer")))

    assert rows(page) == ["digits", "faces"]
    row = row_html(page, "digits")
    assert reverse("ui:model-detail", kwargs={"name": "digits"}) in row
    assert "Classification" in row and "ann" in row
    assert '<td class="num">3</td>' in row  # versions
    assert "production → v2" in row
    assert "1 loaded" in row and "1 failed" in row and "pending" not in row
    assert 'state-firing">1<' in row  # firing alerts
    faces = row_html(page, "faces")
    assert "not deployed" in faces and "production" not in faces


def test_search_matches_name_or_description(client_as, digits):
    make_model("faces", description="face embeddings")
    make_model("prices", description="house prices from DIGITAL listings")
    client = client_as("viewer")

    assert rows(page_of(model_list(client, q="fac"))) == ["faces"]
    assert rows(page_of(model_list(client, q="digit"))) == ["digits", "prices"]  # case-insensitive, description too


def test_filters_by_task_owner_alias_and_deployment_state(client_as, digits, server, actor, make_person):
    faces = make_model("faces", 2, task_kind=TaskKind.REGRESSION)
    faces.owners.add(make_person("bob", "viewer"))
    move_alias(faces, "staging", version(faces, 2), actor)
    deploy(version(faces, 1), server, ObservedState.PENDING)
    make_model("quiet")
    client = client_as("viewer")

    assert rows(page_of(model_list(client, task="regression"))) == ["faces"]
    assert rows(page_of(model_list(client, owner="ann"))) == ["digits"]
    assert rows(page_of(model_list(client, alias="staging"))) == ["faces"]
    assert rows(page_of(model_list(client, alias="production"))) == ["digits"]
    assert rows(page_of(model_list(client, state="pending"))) == ["faces"]
    assert rows(page_of(model_list(client, state="failed"))) == ["digits"]
    assert rows(page_of(model_list(client, state="failed", task="regression"))) == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"state": "broken"}, "state &#x27;broken&#x27; is not one of: pending, loaded, unloaded, failed"),
        ({"task": "vision"}, "task &#x27;vision&#x27; is not one of"),
        ({"owner": "nobody"}, "no model is owned by a user named &#x27;nobody&#x27;"),
        ({"alias": "Prod!"}, "use 1-50 lowercase letters"),
    ],
)
def test_a_bad_filter_value_says_what_is_wrong(client_as, digits, query, says):
    response = model_list(client_as("viewer"), **query)

    assert response.status_code == 400
    page = response.content.decode()
    assert 'data-testid="filter-errors"' in page and says in page
    assert rows(page) == []  # not the unfiltered list under a filter the person believes applied


def test_the_list_pages_by_50_and_the_pager_keeps_the_filters(client_as):
    for n in range(51):
        make_model(f"m{n:02d}", 0, task_kind=TaskKind.REGRESSION)
    make_model("other", 0)
    client = client_as("viewer")

    first = page_of(model_list(client, task="regression"))
    second = page_of(model_list(client, task="regression", page=2))

    assert len(rows(first)) == 50 and rows(second) == ["m50"]
    assert "page 1 of 2" in first and "?task=regression&amp;page=2" in first


def test_the_empty_list_says_how_ci_registers_a_model(client_as):
    page = page_of(model_list(client_as("viewer")))
    assert "No models yet" in page and "POST /api/v1/models/{name}/versions/" in page

    make_model("digits")
    filtered = page_of(model_list(client_as("viewer"), q="nothing-like-it"))
    assert "No model matches these filters" in filtered and "No models yet" not in filtered


def list_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        page_of(model_list(client))
    return len(queries)


def test_the_list_costs_the_same_queries_for_5_or_50_models(client_as, server, actor, make_person):
    client = client_as("viewer")
    owner = make_person("owner", "viewer")

    def add_models(start: int, count: int) -> None:
        for n in range(start, start + count):
            model = make_model(f"model-{n:03d}", 2)
            model.owners.add(owner)
            move_alias(model, "production", version(model, 1), actor)
            fire_alert(model, deploy(version(model, 2), server, ObservedState.FAILED), actor)

    add_models(0, 5)
    few = list_queries(client)
    add_models(5, 45)
    many = list_queries(client)

    assert few == many, (few, many)
    assert many <= 30


# --- one model --------------------------------------------------------------------------------


def detail(client, name: str = "digits", **query):
    return client.get(reverse("ui:model-detail", kwargs={"name": name}), query)


def test_the_model_page_shows_versions_aliases_history_deployments_checks_and_alerts(client_as, digits):
    page = page_of(detail(client_as("viewer")))

    assert "handwritten digit classifier" in page and "Classification" in page and "ann" in page
    assert "p95 ≤ 25 ms" in page
    # Versions, newest first, with the alias on each, where each is deployed and its latest accuracy.
    assert rows(page, "version-row") == ["3", "2", "1"]
    assert reverse("ui:version-detail", kwargs={"name": "digits", "number": 2}) in page
    v2 = page[page.index('data-version="2"') :]
    v2 = v2[: v2.index("</tr>")]
    assert "production" in v2 and "gpu-1" in v2 and 'data-state="loaded"' in v2 and "0.9731" in v2
    # The alias, where it points, and its history (newest first, who, from, to).
    alias_row = page[page.index('data-testid="alias-production"') :]
    assert "v2" in alias_row[: alias_row.index("</tr>")]
    history = page[page.index('data-testid="alias-history"') :]
    history = history[: history.index("</table>")]
    assert history.index("<td>v1</td>") < history.index("nothing")  # v1 -> v2 above (created) -> v1
    assert "cli" in history
    # Deployments per server with Triton's error and the latest checks; the firing alert links on.
    deployments = page[page.index('data-testid="model-deployments"') :]
    assert "failed to load &#x27;digits&#x27; version 3: bad config" in deployments
    assert "model readiness fail" in deployments
    assert deployments.index('data-state="failed"') < deployments.index('data-state="loaded"')  # failed first
    alert = Alert.objects.get(model=digits)
    assert reverse("ui:alert-detail", kwargs={"pk": alert.pk}) in page
    # The two charts of the model.
    assert 'data-testid="chart-rollout"' in page and 'data-target="model:digits"' in page
    assert 'data-testid="chart-accuracy"' in page


def test_an_unknown_model_is_404(client_as):
    assert detail(client_as("viewer"), "nope").status_code == 404


def detail_queries(client, name: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        page_of(detail(client, name))
    return len(queries)


def grow(model: Model, server: InferenceServer, actor, versions: int) -> None:
    """Give `model` `versions` versions, each deployed, measured, and aliased by one move."""
    make_versions = [
        ModelVersion(
            model=model,
            number=n,
            artifact=f"{model.name}/{n:064x}.zip",
            artifact_format="zip",
            sha256=f"{n:064x}",
            size=10,
            backend="python",
        )
        for n in range(model.versions.count() + 1, versions + 1)
    ]
    for v in ModelVersion.objects.bulk_create(make_versions):
        deployment = deploy(v, server, ObservedState.LOADED)
        CheckResult.objects.create(kind=CheckKind.ACCURACY, status=Status.OK, version=v, value=0.5)
        CheckResult.objects.create(kind=CheckKind.LATENCY, status=Status.OK, deployment=deployment, value=3.0)
        move_alias(model, f"alias-{v.number}", v, actor)
        fire_alert(model, deployment, actor)


def test_the_model_page_costs_the_same_queries_for_5_or_60_versions(client_as, server, actor):
    client = client_as("operator")  # the promote form's queries too
    model = make_model("big", 0)
    grow(model, server, actor, 5)
    few = detail_queries(client, "big")
    grow(model, server, actor, 60)  # past every section's cut: versions page, alerts, alias history
    many = detail_queries(client, "big")
    assert Alert.objects.filter(model=model).count() == AliasMove.objects.filter(model=model).count() == 60

    assert few == many, (few, many)
    assert many <= 30


# --- who sees which buttons ----------------------------------------------------------------------


def test_a_viewer_sees_no_promote_or_rollback_forms(client_as, digits):
    page = page_of(detail(client_as("viewer")))

    assert 'data-testid="promote-form"' not in page
    assert 'data-testid="rollback-production"' not in page
    assert reverse("ui:alias-rollback", kwargs={"name": "digits", "alias": "production"}) not in page


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_an_operator_or_admin_sees_promote_and_roll_back(client_as, digits, role):
    page = page_of(detail(client_as(role)))

    promote = page[page.rindex("<form", 0, page.index('data-testid="promote-form"')) :]
    promote = promote[: promote.index("</form>")]
    assert reverse("ui:alias-promote", kwargs={"name": "digits"}) in promote and "data-confirm=" in promote
    assert '<option value="3">v3</option>' in promote and 'name="gate"' in promote
    rollback = page[page.index('data-testid="rollback-production"') :]
    rollback = rollback[: rollback.index("</form>")]
    assert "Roll back to v1" in rollback and "data-confirm=" in rollback and 'value="1"' in rollback


# --- promote -------------------------------------------------------------------------------------


def promote(client, follow: bool = True, **data):
    return client.post(reverse("ui:alias-promote", kwargs={"name": "digits"}), data, follow=follow)


def production(model: Model) -> int | None:
    return Alias.objects.filter(model=model, name="production").values_list("version__number", flat=True).first()


def ui_events(action: str = "alias.move"):
    return AuditEvent.objects.filter(source=Source.UI, action=action)


def test_an_operator_promotes_a_version_audited_as_the_ui(client_as, digits):
    client = client_as("operator")

    response = promote(client, alias="production", version="3")

    assert response.redirect_chain == [(reverse("ui:model-detail", kwargs={"name": "digits"}), 302)]
    assert shown_messages(response) == ["digits@production now points at v3 (was v2)"]
    assert production(digits) == 3
    move = AliasMove.objects.filter(model=digits).first()
    assert (move.from_version.number, move.to_version.number, move.moved_by) == (2, 3, "user:operator-person")
    event = ui_events().get()
    assert event.user == client.person and event.details["from_version"] == 2 and event.details["to_version"] == 3


def test_promoting_to_a_new_alias_creates_it(client_as, digits):
    response = promote(client_as("operator"), alias="staging", version="1")

    assert shown_messages(response) == ["digits@staging now points at v1 (new alias)"]
    assert Alias.objects.get(model=digits, name="staging").version.number == 1
    assert ui_events().get().details["alias"] == "staging"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"alias": "production", "version": "9"}, "version: model 'digits' has no version 9"),
        ({"alias": "Prod!", "version": "1"}, "alias: use 1-50 lowercase letters"),
        ({"alias": "production"}, "version: This field is required."),
    ],
)
def test_a_bad_promotion_names_the_field_and_writes_nothing(client_as, digits, data, says):
    moves = AliasMove.objects.count()

    response = promote(client_as("operator"), **data)

    assert response.status_code == 200
    [message] = shown_messages(response)
    assert says in message, message
    assert production(digits) == 2 and AliasMove.objects.count() == moves and not ui_events().exists()


def test_promoting_where_the_alias_already_points_moves_nothing(client_as, digits):
    response = promote(client_as("operator"), alias="production", version="2", gate="on")

    assert shown_messages(response) == ["digits@production already points at v2: nothing moved"]
    assert not ui_events().exists()


def test_a_gated_promotion_of_a_version_not_loaded_is_refused_with_the_failed_gate(client_as, digits):
    moves = AliasMove.objects.count()

    response = promote(client_as("operator"), alias="production", version="1", gate="on")

    [message] = shown_messages(response)
    assert message.startswith("digits v1 was not promoted: gate 'loaded' failed: digits v1 is not loaded")
    assert "error" in [m.tags for m in response.context["messages"]]
    assert production(digits) == 2 and AliasMove.objects.count() == moves and not ui_events().exists()


def test_the_alias_move_url_promotes_the_alias_it_names_and_returns_to_next(client_as, digits):
    back = reverse("ui:version-detail", kwargs={"name": "digits", "number": 3})
    url = reverse("ui:alias-move", kwargs={"name": "digits", "alias": "production"})

    response = client_as("operator").post(url, {"version": "3", "next": back})

    assert response.status_code == 302 and response["Location"] == back
    assert production(digits) == 3 and ui_events().count() == 1


def test_the_alias_move_url_refuses_a_bad_alias_name_and_an_outside_next(client_as, digits):
    url = reverse("ui:alias-move", kwargs={"name": "digits", "alias": "Prod"})

    response = client_as("operator").post(url, {"version": "3", "next": "https://evil.example.com/"}, follow=True)

    assert response.redirect_chain[0][0] == reverse("ui:model-detail", kwargs={"name": "digits"})
    [message] = shown_messages(response)
    assert message.startswith("digits@Prod was not moved: alias: use 1-50 lowercase letters"), message
    assert not Alias.objects.filter(name="Prod").exists() and not ui_events().exists()


# --- roll back -----------------------------------------------------------------------------------


def rollback(client, alias: str = "production", **data):
    url = reverse("ui:alias-rollback", kwargs={"name": "digits", "alias": alias})
    return client.post(url, data, follow=True)


def test_rolling_back_moves_the_alias_to_where_it_pointed_before_its_last_move(client_as, digits):
    response = rollback(client_as("operator"), to_version="1")

    assert shown_messages(response) == ["digits@production rolled back to v1 (was v2)"]
    assert production(digits) == 1
    move = AliasMove.objects.filter(model=digits).first()
    assert (move.from_version.number, move.to_version.number) == (2, 1)
    event = ui_events().get()
    assert event.details["rollback"] is True and event.details["to_version"] == 1
    # The page now offers to undo the roll back.
    assert 'data-testid="rollback-production"' in page_of(response) and "Roll back to v2" in page_of(response)


def test_an_alias_that_was_only_created_has_nothing_to_roll_back_to(client_as, digits, actor):
    move_alias(digits, "staging", version(digits, 1), actor)
    client = client_as("operator")

    page = page_of(detail(client))
    assert 'data-testid="rollback-staging"' not in page and "nothing to roll back to" in page
    response = rollback(client, "staging", to_version="1")

    [message] = shown_messages(response)
    assert "digits@staging pointed at no version before its last move" in message
    assert "nothing to roll back to" in message
    assert not ui_events().exists()


def test_an_alias_that_never_moved_has_nothing_to_roll_back_to(client_as, digits):
    response = rollback(client_as("operator"), "canary", to_version="1")

    assert shown_messages(response) == ["digits@canary has never moved: nothing to roll back to"]
    assert not Alias.objects.filter(name="canary").exists()


def test_rolling_back_to_a_deleted_version_is_refused(client_as, digits, actor):
    delete_version_rows(version(digits, 1), actor)

    response = rollback(client_as("operator"), to_version="1")

    [message] = shown_messages(response)
    assert "has been deleted" in message and production(digits) == 2
    assert not ui_events().exists()


def test_a_stale_rollback_button_is_refused(client_as, digits, actor):
    move_alias(digits, "production", version(digits, 3), actor)  # someone moved it after the page was shown

    response = rollback(client_as("operator"), to_version="1")

    [message] = shown_messages(response)
    assert "moved since this page was shown: its last move came from v2, not v1" in message
    assert production(digits) == 3 and not ui_events().exists()


def test_a_rollback_without_the_offered_version_names_the_field(client_as, digits):
    [message] = shown_messages(rollback(client_as("operator")))

    assert "to_version: This field is required." in message and production(digits) == 2


# --- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url_name", ["ui:model-list", "ui:model-detail"])
def test_pages_send_anonymous_people_to_sign_in_and_refuse_people_without_a_role(client, client_as, digits, url_name):
    url = reverse(url_name, kwargs={"name": "digits"} if url_name == "ui:model-detail" else {})

    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("ui:login"))
    refused = client_as(None).get(url)
    assert refused.status_code == 403 and "does not allow &#x27;read&#x27;" in refused.content.decode()


ACTIONS = [
    ("ui:alias-promote", {"name": "digits"}, {"alias": "production", "version": "3"}),
    ("ui:alias-move", {"name": "digits", "alias": "production"}, {"version": "3"}),
    ("ui:alias-rollback", {"name": "digits", "alias": "production"}, {"to_version": "1"}),
]


@pytest.mark.parametrize(("url_name", "kwargs", "data"), ACTIONS)
@pytest.mark.parametrize("role", [None, "viewer"])
def test_people_without_deploy_cannot_move_aliases(client_as, digits, url_name, kwargs, data, role):
    response = client_as(role).post(reverse(url_name, kwargs=kwargs), data)

    assert response.status_code == 403 and "does not allow &#x27;deploy&#x27;" in response.content.decode()
    assert production(digits) == 2 and not ui_events().exists()


@pytest.mark.parametrize(("url_name", "kwargs", "data"), ACTIONS)
def test_anonymous_alias_moves_go_to_sign_in(client, digits, url_name, kwargs, data):
    response = client.post(reverse(url_name, kwargs=kwargs), data)

    assert response.status_code == 302 and response["Location"].startswith(reverse("ui:login"))
    assert production(digits) == 2


@pytest.mark.parametrize(("url_name", "kwargs", "data"), ACTIONS)
def test_alias_moves_are_post_only(client_as, digits, url_name, kwargs, data):
    assert client_as("operator").get(reverse(url_name, kwargs=kwargs), data).status_code == 405
    assert production(digits) == 2


def test_moving_an_alias_of_an_unknown_model_is_404(client_as):
    url = reverse("ui:alias-promote", kwargs={"name": "nope"})
    assert client_as("operator").post(url, {"alias": "production", "version": "1"}).status_code == 404


def test_a_version_deployment_left_unloaded_is_not_counted_as_news(client_as, digits, server):
    deployment = Deployment.objects.get(version=version(digits, 2))
    Deployment.objects.filter(pk=deployment.pk).update(desired=DesiredState.UNLOADED, observed=ObservedState.UNLOADED)

    row = row_html(page_of(model_list(client_as("viewer"))), "digits")

    assert "loaded" not in row and "1 failed" in row
