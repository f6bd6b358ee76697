"""The version page, its comparison, its artifact download, and deploy / undeploy /
accuracy run (and its progress) / promote from the UI: who may do what, that writes go through the services and are
audited as the UI's, and that refusals say what was wrong and write nothing."""

import html

import pytest
from django.urls import reverse
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.monitoring import accuracy_tasks
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.models import Alias, AliasMove, EvaluationSet, ModelVersion
from modelhub.registry.services import move_alias, register_upload
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def upload(tmp_path):
    """upload(factor, **manifest changes) -> a new version of "digits"."""

    def make(factor: int = 2, **changes) -> ModelVersion:
        artifact = make_zip(tmp_path / f"v{factor}.zip", {"1/model.py": doubler_source(factor)})
        manifest = {**DOUBLER_MANIFEST, **changes}
        return register_upload("digits", artifact, manifest, Actor(source=Source.CLI), create=True).version

    return make


@pytest.fixture
def version(upload):
    return upload(2)


def server(name: str, **fields) -> InferenceServer:
    return InferenceServer.objects.create(name=name, base_url="http://127.0.0.1:9", **fields)


def page_url(version: ModelVersion, name: str = "ui:version-detail") -> str:
    return reverse(name, args=[version.model.name, version.number])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def ui_events(action: str):
    return AuditEvent.objects.filter(action=action, source=Source.UI)


# --- the page ----------------------------------------------------------------------------


def test_viewer_sees_schema_config_provenance_and_artifact(client_as, version):
    html = client_as("viewer").get(page_url(version)).content.decode()

    assert 'data-testid="schema-table"' in html
    assert "INPUT" in html and "OUTPUT" in html and "FP32" in html
    # The config the reconciler would send, in Triton's text form.
    assert 'data-testid="triton-config">name: &quot;digits__v1&quot;' in html  # the version's own Triton name
    assert "backend: &quot;python&quot;" in html and "TYPE_FP32" in html
    assert "versions: 1" in html
    assert '<a href="https://ci.example.com/runs/1"' in html
    assert "0123abcd" in html
    assert version.sha256 in html
    assert reverse("ui:version-artifact", args=["digits", version.number]) in html


def test_a_ci_run_url_that_is_not_http_is_text_not_a_link(client_as, version):
    ModelVersion.objects.filter(pk=version.pk).update(ci_run_url="ftp://ci.example.com/run/9")
    html = client_as("viewer").get(page_url(version)).content.decode()
    assert "ftp://ci.example.com/run/9" in html
    assert 'href="ftp://' not in html


def test_anonymous_goes_to_login_no_role_is_refused_unknown_version_is_404(client_as, client, version):
    assert client.get(page_url(version))["Location"].startswith(reverse("ui:login"))
    refused = client_as(None).get(page_url(version))
    assert refused.status_code == 403 and "does not allow 'read'" in html.unescape(refused.content.decode())
    for number in (99, 10**12):  # beyond Postgres' integer: still a 404, not a 500
        assert client_as("viewer").get(reverse("ui:version-detail", args=["digits", number])).status_code == 404


def test_viewer_sees_no_action_forms_operator_sees_deploy_and_undeploy(client_as, version):
    srv = server("srv")
    Deployment.objects.create(version=version, server=srv, desired=DesiredState.LOADED)

    viewer = client_as("viewer").get(page_url(version)).content.decode()
    operator = client_as("operator").get(page_url(version)).content.decode()

    for testid in ('data-testid="deploy-form"', 'data-testid="undeploy-srv"'):
        assert testid not in viewer
        assert testid in operator
    assert '<option value="srv">srv</option>' in operator and ">Deploy</button>" in operator
    # The progress of each deployment is polled from its status fragment.
    assert reverse("ui:deployment-status", args=[Deployment.objects.get().pk]) in viewer


def test_page_says_which_servers_cannot_serve_the_backend(client_as, version):
    server("onnx-only", backends=["onnxruntime"])
    html = client_as("operator").get(page_url(version)).content.decode()
    assert 'data-testid="cannot-serve-onnx-only"' in html
    assert "server &#x27;onnx-only&#x27; declares backends onnxruntime" in html


def test_page_lists_accuracy_results_newest_first_and_the_evaluation_set(client_as, version):
    EvaluationSet.objects.create(
        model=version.model, file="x.npz", file_format="npz", sha256="0" * 64, size=1, rows=120, output="OUTPUT"
    )
    for value, minutes_ago in ((0.81, 10), (0.93, 1)):
        CheckResult.objects.create(
            kind=CheckKind.ACCURACY,
            status=Status.OK,
            version=version,
            value=value,
            details={"metric": "accuracy"},
            created_at=timezone.now() - timezone.timedelta(minutes=minutes_ago),
        )
    html = client_as("viewer").get(page_url(version)).content.decode()
    assert "120 rows" in html
    assert html.index("0.9300") < html.index("0.8100")


# --- deploy and undeploy -------------------------------------------------------------------


def test_operator_deploys_to_one_server_audited_and_sent_to_its_progress(client_as, version):
    srv = server("srv")
    response = client_as("operator").post(page_url(version, "ui:version-deploy"), {"servers": ["srv"]})

    deployment = Deployment.objects.get(version=version, server=srv)
    assert deployment.desired == DesiredState.LOADED
    assert response.status_code == 302
    assert response["Location"] == reverse("ui:deployment-detail", args=[deployment.pk])
    event = ui_events("deployment.deploy").get()
    assert event.user.username == "operator-person"
    assert any("Deploying digits v1 to srv" in m for m in messages_of(response))


def test_deploy_to_several_servers_returns_to_the_version_page(client_as, version):
    server("a"), server("b")
    response = client_as("operator").post(page_url(version, "ui:version-deploy"), {"servers": ["a", "b"]})
    assert response["Location"] == page_url(version)
    assert sorted(Deployment.objects.values_list("server__name", flat=True)) == ["a", "b"]
    assert ui_events("deployment.deploy").count() == 2


def test_deploy_to_a_server_without_the_backend_is_refused_with_the_apis_words(client_as, version):
    server("onnx-only", backends=["onnxruntime"])
    server("fine")
    response = client_as("operator").post(page_url(version, "ui:version-deploy"), {"servers": ["fine", "onnx-only"]})

    assert response["Location"] == page_url(version)
    [error] = messages_of(response)
    assert "server 'onnx-only' declares backends onnxruntime; digits v1 needs backend 'python'" in error
    assert not Deployment.objects.exists() and not AuditEvent.objects.filter(source=Source.UI).exists()


@pytest.mark.parametrize(
    "servers, problem",
    [(["nope"], "unknown server 'nope'"), (["off"], "server 'off' is disabled"), ([], "choose at least one server")],
)
def test_deploy_to_unknown_disabled_or_no_server_names_it_and_writes_nothing(client_as, version, servers, problem):
    server("off", enabled=False)
    response = client_as("operator").post(page_url(version, "ui:version-deploy"), {"servers": servers})
    assert response.status_code == 302
    assert problem in messages_of(response)[0]
    assert not Deployment.objects.exists() and not AuditEvent.objects.filter(source=Source.UI).exists()


def test_viewer_cannot_deploy_or_undeploy(client_as, version):
    srv = server("srv")
    Deployment.objects.create(version=version, server=srv, desired=DesiredState.LOADED)
    viewer = client_as("viewer")
    assert viewer.post(page_url(version, "ui:version-deploy"), {"servers": ["srv"]}).status_code == 403
    assert viewer.post(page_url(version, "ui:version-undeploy"), {"server": "srv"}).status_code == 403
    assert Deployment.objects.get().desired == DesiredState.LOADED
    assert not AuditEvent.objects.filter(source=Source.UI).exists()


def test_deploy_is_post_only(client_as, version):
    server("srv")
    assert client_as("operator").get(page_url(version, "ui:version-deploy"), {"servers": "srv"}).status_code == 405
    assert not Deployment.objects.exists()


def test_operator_undeploys_audited_and_sent_to_its_progress(client_as, version):
    deployment = Deployment.objects.create(version=version, server=server("srv"), desired=DesiredState.LOADED)
    response = client_as("operator").post(page_url(version, "ui:version-undeploy"), {"server": "srv"})

    deployment.refresh_from_db()
    assert deployment.desired == DesiredState.UNLOADED
    assert response["Location"] == reverse("ui:deployment-detail", args=[deployment.pk])
    assert ui_events("deployment.undeploy").count() == 1
    assert any("Undeploying digits v1 from srv" in m for m in messages_of(response))


def test_undeploy_from_an_unknown_server_names_it(client_as, version):
    response = client_as("operator").post(page_url(version, "ui:version-undeploy"), {"server": "ghost"})
    assert "unknown server 'ghost'" in messages_of(response)[0]
    assert not AuditEvent.objects.filter(source=Source.UI).exists()


# --- accuracy run ----------------------------------------------------------------------------


@pytest.fixture
def queued(monkeypatch):
    """The deployment ids the accuracy task was queued for (the task itself needs Triton)."""
    ids = []
    monkeypatch.setattr(accuracy_tasks.run_accuracy, "delay", lambda pk, *a: ids.append(pk))
    return ids


def evaluation_set(version):
    return EvaluationSet.objects.create(
        model=version.model, file="x.npz", file_format="npz", sha256="0" * 64, size=1, rows=3, output="OUTPUT"
    )


def test_admin_queues_an_accuracy_run_on_a_loaded_deployment(
    client_as, version, queued, django_capture_on_commit_callbacks
):
    evaluation_set(version)
    deployment = Deployment.objects.create(
        version=version, server=server("srv"), desired=DesiredState.LOADED, observed=ObservedState.LOADED
    )
    admin = client_as("admin")
    assert 'data-testid="accuracy-run"' in admin.get(page_url(version)).content.decode()
    assert 'data-testid="accuracy-run"' not in client_as("operator").get(page_url(version)).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(page_url(version, "ui:version-accuracy"))

    assert queued == [deployment.pk]
    assert ui_events("accuracy.run").get().details == {"server": "srv", "status": "queued"}
    assert response["Location"] == page_url(version)
    assert any("queued" in m for m in messages_of(response))


def test_accuracy_run_without_a_set_or_a_loaded_deployment_says_why(client_as, version, queued):
    admin = client_as("admin")
    response = admin.post(page_url(version, "ui:version-accuracy"))
    assert "model 'digits' has no evaluation set" in messages_of(response)[0]

    evaluation_set(version)
    response = admin.post(page_url(version, "ui:version-accuracy"))
    assert "digits v1 is not loaded on any enabled server: deploy it first" in messages_of(response)[-1]
    assert queued == [] and not ui_events("accuracy.run").exists()


def test_operator_cannot_run_accuracy(client_as, version, queued):
    evaluation_set(version)
    Deployment.objects.create(version=version, server=server("srv"), observed=ObservedState.LOADED)
    assert client_as("operator").post(page_url(version, "ui:version-accuracy")).status_code == 403
    assert queued == []


# --- accuracy run progress ---------------------------------------------------------------------


@pytest.fixture
def run_asked(client_as, version, queued, django_capture_on_commit_callbacks):
    """An accuracy run of `version` asked for by an admin through the page (the real view
    writes the audit row); the task is not run, results are written by the tests."""
    evaluation_set(version)
    Deployment.objects.create(
        version=version, server=server("srv"), desired=DesiredState.LOADED, observed=ObservedState.LOADED
    )
    with django_capture_on_commit_callbacks(execute=True):
        client_as("admin").post(page_url(version, "ui:version-accuracy"))
    return ui_events("accuracy.run").get()


def status_of(client, version) -> str:
    response = client.get(page_url(version, "ui:version-accuracy-status"))
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def accuracy_result(version, at, **fields) -> CheckResult:
    fields = {"status": Status.OK, "value": 0.93, "details": {"metric": "accuracy", "threshold": 0.9}, **fields}
    return CheckResult.objects.create(kind=CheckKind.ACCURACY, version=version, created_at=at, **fields)


def test_a_queued_accuracy_run_is_polled_until_its_result(client_as, version, run_asked):
    # A result older than the request is not its outcome.
    accuracy_result(version, run_asked.created_at - timezone.timedelta(hours=1), value=0.5)
    viewer = client_as("viewer")

    page = viewer.get(page_url(version)).content.decode()
    status_url = page_url(version, "ui:version-accuracy-status")
    assert f'data-testid="accuracy-progress" data-refresh-url="{status_url}" data-refresh-every="2"' in page
    fragment = status_of(viewer, version)
    queued_at = run_asked.created_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f"queued at {queued_at} on srv, waiting for the result…" in fragment
    assert "data-final" not in fragment


def test_a_finished_run_shows_its_status_value_threshold_and_message(client_as, version, run_asked):
    accuracy_result(version, run_asked.created_at + timezone.timedelta(seconds=3), message="0.9300 (threshold 0.9)")

    fragment = status_of(client_as("viewer"), version)

    assert "data-final" in fragment and "waiting" not in fragment
    assert 'data-state="ok"' in fragment
    assert '<span data-testid="accuracy-value">0.9300</span>' in fragment
    assert "threshold 0.9 (at least)" in fragment
    assert "0.9300 (threshold 0.9)" in fragment
    # The page renders the outcome already final, so it does not poll.
    assert 'data-testid="accuracy-outcome"' in client_as("viewer").get(page_url(version)).content.decode()


def test_a_failed_run_shows_tritons_error(client_as, version, run_asked):
    error = "[StatusCode.INTERNAL] failed to infer: input 'INPUT' got shape [3, 4], expected [-1, 1]"
    accuracy_result(
        version, run_asked.created_at + timezone.timedelta(seconds=3), status=Status.FAIL, value=None, message=error
    )

    fragment = status_of(client_as("viewer"), version)

    assert "data-final" in fragment and 'data-state="fail"' in fragment
    assert f'<div class="triton-error" data-testid="accuracy-message">{error}</div>' in fragment
    assert '<span data-testid="accuracy-value">no value</span>' in fragment


def test_a_run_past_the_queues_hard_time_limit_stops_waiting(client_as, version, run_asked, settings):
    settings.TASK_TIME_LIMITS_BY_QUEUE = {**settings.TASK_TIME_LIMITS_BY_QUEUE, "accuracy": (50, 60)}
    viewer = client_as("viewer")
    AuditEvent.objects.filter(pk=run_asked.pk).update(created_at=timezone.now() - timezone.timedelta(seconds=55))
    assert "data-final" not in status_of(viewer, version)

    AuditEvent.objects.filter(pk=run_asked.pk).update(created_at=timezone.now() - timezone.timedelta(seconds=61))
    fragment = status_of(viewer, version)

    assert "data-final" in fragment
    assert "no result after 60 s: see the worker log" in fragment


def test_without_a_run_the_page_has_no_progress_panel_and_the_fragment_is_final(client_as, version):
    assert 'data-testid="accuracy-progress"' not in client_as("viewer").get(page_url(version)).content.decode()
    fragment = status_of(client_as("viewer"), version)
    assert "data-final" in fragment and "No accuracy run has been asked for" in fragment


def test_accuracy_status_anonymous_goes_to_login_no_role_is_refused(client_as, client, version):
    url = page_url(version, "ui:version-accuracy-status")
    assert client.get(url)["Location"].startswith(reverse("ui:login"))
    refused = client_as(None).get(url)
    assert refused.status_code == 403 and "does not allow 'read'" in html.unescape(refused.content.decode())
    assert client_as("viewer").get(reverse("ui:version-accuracy-status", args=["digits", 99])).status_code == 404


def test_accuracy_status_queries_do_not_grow_with_results(client_as, version, run_asked):
    viewer = client_as("viewer")
    url = page_url(version, "ui:version-accuracy-status")
    few = queries_for(viewer, url)
    for n in range(1, 12):
        accuracy_result(version, run_asked.created_at + timezone.timedelta(seconds=n), server=server(f"s{n}"))
    assert queries_for(viewer, url) == few <= 8  # session, person, roles, then version, run, result


# --- promote from the version page ---------------------------------------------------------------


@pytest.fixture
def production_on_v1(upload):
    """digits v1 (production points at it) and v2."""
    v1, v2 = upload(2), upload(3)
    move_alias(v1.model, "production", v1, Actor(source=Source.CLI))
    return v1, v2


def promote_from(client, version, **fields):
    data = {"alias": "production", "version": str(version.number), "next": page_url(version), **fields}
    return client.post(reverse("ui:alias-promote", args=[version.model.name]), data)


def test_operator_promotes_from_the_version_page_and_lands_back_on_it(client_as, production_on_v1):
    v1, v2 = production_on_v1

    response = promote_from(client_as("operator"), v2)

    assert response["Location"] == page_url(v2)
    assert messages_of(response) == ["digits@production now points at v2 (was v1)"]
    assert Alias.objects.get(name="production").version == v2
    assert AliasMove.objects.filter(alias="production", from_version=v1, to_version=v2).count() == 1
    event = ui_events("alias.move").get()
    assert event.details["to_version"] == 2 and event.actor == "user:operator-person"
    # Each page's alias rows say which alias points at that version already.
    assert 'data-testid="alias-here-production"' in client_as("viewer").get(page_url(v2)).content.decode()
    assert 'data-testid="alias-here-production"' not in client_as("viewer").get(page_url(v1)).content.decode()


def test_a_gated_promotion_from_the_version_page_is_refused_with_the_failed_gate(client_as, production_on_v1):
    v1, v2 = production_on_v1

    response = promote_from(client_as("operator"), v2, gate="on")

    assert response["Location"] == page_url(v2)
    [message] = messages_of(response)
    assert message.startswith("digits v2 was not promoted: gate 'loaded' failed: digits v2 is not loaded")
    assert Alias.objects.get(name="production").version == v1
    assert AliasMove.objects.count() == 1 and not ui_events("alias.move").exists()


def test_viewer_sees_the_alias_rows_but_no_promote_form(client_as, production_on_v1):
    v1, v2 = production_on_v1
    viewer = client_as("viewer").get(page_url(v2)).content.decode()
    operator = client_as("operator").get(page_url(v2)).content.decode()

    assert 'data-testid="alias-row-production"' in viewer
    assert 'data-testid="version-promote-form"' not in viewer
    assert 'data-testid="version-promote-form"' in operator
    assert '<input type="hidden" name="version" value="2">' in operator
    assert f'<input type="hidden" name="next" value="{page_url(v2)}">' in operator
    assert '<option value="production" label="production (now v1)">' in operator


def test_a_forged_viewer_promotion_is_refused_and_moves_nothing(client_as, production_on_v1):
    v1, v2 = production_on_v1
    assert promote_from(client_as("viewer"), v2).status_code == 403
    assert Alias.objects.get(name="production").version == v1
    assert AliasMove.objects.count() == 1 and not AuditEvent.objects.filter(source=Source.UI).exists()


def test_the_deploy_confirmation_names_the_chosen_servers(client_as, version):
    server("srv")
    page = client_as("operator").get(page_url(version)).content.decode()
    # modelhub.js replaces {selected} with the chosen options' labels (tests/browser runs it).
    assert 'data-confirm="Deploy digits v1 to {selected}?"' in page


# --- artifact ------------------------------------------------------------------------------------


def test_artifact_download_streams_the_uploaded_bytes(client_as, tmp_path, upload):
    version = upload(7)
    response = client_as("viewer").get(page_url(version, "ui:version-artifact"))

    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == (tmp_path / "v7.zip").read_bytes()
    assert response["Content-Disposition"] == 'attachment; filename="digits-v1.zip"'


# --- compare ----------------------------------------------------------------------------------


@pytest.fixture
def two_versions(upload):
    v1 = upload(2)
    v2 = upload(3, inputs=[{"name": "INPUT", "datatype": "FP32", "dims": [4]}], max_batch_size=8)
    return v1, v2


def test_compare_marks_differing_schema_rows_and_diffs_the_configs(client_as, two_versions):
    v1, v2 = two_versions
    for version, p95 in ((v1, 12.5), (v2, 40.0)):
        CheckResult.objects.create(
            kind=CheckKind.LATENCY,
            status=Status.OK,
            version=version,
            value=p95,
            details={"p50_ms": 3.0, "p95_ms": p95, "p99_ms": p95 + 1},
        )
    CheckResult.objects.create(
        kind=CheckKind.ACCURACY, status=Status.OK, version=v2, value=0.875, details={"metric": "accuracy"}
    )

    response = client_as("viewer").get(page_url(v1, "ui:version-compare"), {"with": v2.number})
    html = response.content.decode()

    assert response.status_code == 200
    assert '<tr class="diff" data-tensor="input:INPUT">' in html
    assert '<tr data-tensor="output:OUTPUT">' in html
    assert "-max_batch_size: 0" not in html  # protobuf omits a zero: the added line is what differs
    assert "+max_batch_size: 8" in html and "--- digits v1" in html and "+++ digits v2" in html
    assert "12.5" in html and "40.0" in html and "0.8750" in html


@pytest.mark.parametrize(
    "raw, problem", [("abc", "must be a version number"), ("99", "has no version 99"), ("1", "other than v1")]
)
def test_compare_with_a_bad_version_says_so(client_as, two_versions, raw, problem):
    v1, _ = two_versions
    response = client_as("viewer").get(page_url(v1, "ui:version-compare"), {"with": raw})
    assert response.status_code == 400
    assert problem in response.content.decode()


def test_compare_without_a_choice_asks_for_one(client_as, two_versions):
    v1, _ = two_versions
    response = client_as("viewer").get(page_url(v1, "ui:version-compare"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "choose a version to compare with" in html and 'data-testid="compare-form"' in html


# --- cost ----------------------------------------------------------------------------------------


def queries_for(client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_version_page_queries_do_not_grow_with_servers_deployments_or_results(client_as, version):
    operator = client_as("operator")
    evaluation_set(version)
    Deployment.objects.create(version=version, server=server("s0"), observed=ObservedState.LOADED)
    few = queries_for(operator, page_url(version))
    for n in range(1, 12):
        Deployment.objects.create(version=version, server=server(f"s{n}"), observed=ObservedState.LOADED)
        CheckResult.objects.create(kind=CheckKind.ACCURACY, status=Status.OK, version=version, value=0.9)
    assert queries_for(operator, page_url(version)) == few <= 30
