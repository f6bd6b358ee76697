"""The server pages: the list, one server's page with what Triton serves beside what
ModelHub wants, and the admin's register / edit / delete through serving.services,
audited as the UI's; refusals say what was wrong and write nothing."""

import socket
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.lib.urls import hide_credentials
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.models import Model, ModelVersion
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from modelhub.serving.triton_client import TritonClient
from modelhub.ui.views.servers import Served, compare_served
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db

CLOSED_URL = "http://127.0.0.1:9"  # nothing listens on the discard port: refused at once


@pytest.fixture
def upload(tmp_path):
    """upload("digits", factor) -> a new version of that model."""

    def make(model: str = "digits", factor: int = 2) -> ModelVersion:
        artifact = make_zip(tmp_path / f"{model}-{factor}.zip", {"1/model.py": doubler_source(factor)})
        return register_upload(model, artifact, dict(DOUBLER_MANIFEST), Actor(source=Source.CLI), create=True).version

    return make


def server(name: str = "gpu-a", **fields) -> InferenceServer:
    return InferenceServer.objects.create(name=name, base_url=fields.pop("base_url", CLOSED_URL), **fields)


def deploy_row(version, srv, desired=DesiredState.LOADED, observed=ObservedState.LOADED, **fields) -> Deployment:
    # Rows as the reconciler would leave them: these tests are about pages, not loads.
    return Deployment.objects.create(version=version, server=srv, desired=desired, observed=observed, **fields)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def ui_events(action: str):
    return AuditEvent.objects.filter(action=action, source=Source.UI)


def detail_url(name: str) -> str:
    return reverse("ui:server-detail", args=[name])


# --- the list ------------------------------------------------------------------------------


def test_viewer_sees_each_server_with_masked_url_health_and_deployments_by_state(client_as, upload):
    a = server(
        "gpu-a",
        base_url="http://ops:hunter2@triton-a:8000",
        labels=["staging", "gpu"],
        backends=["python", "onnxruntime"],
        live=True,
        ready=False,
        triton_version="2.51.0",
        last_seen_at=timezone.now(),
        last_error="model 'x' failed to load",
    )
    server("cpu-b", enabled=False)
    v1, v2, v3 = upload("digits", 2), upload("digits", 3), upload("digits", 4)
    deploy_row(v1, a)
    deploy_row(v2, a)
    deploy_row(v3, a, observed=ObservedState.FAILED)

    html = client_as("viewer").get(reverse("ui:server-list")).content.decode()

    assert 'data-testid="server-row" data-server="gpu-a"' in html
    assert 'data-testid="server-row" data-server="cpu-b"' in html
    assert "hunter2" not in html and "http://***@triton-a:8000" in html
    assert f'href="{detail_url("gpu-a")}"' in html
    assert "staging, gpu" in html and "python, onnxruntime" in html and "2.51.0" in html
    assert "2 loaded" in html and "1 failed" in html
    assert "model &#x27;x&#x27; failed to load" in html
    assert 'data-state="up"' in html and ">not ready<" in html


def test_empty_list_says_how_to_register_a_server(client_as):
    html = client_as("viewer").get(reverse("ui:server-list")).content.decode()

    assert "No servers yet: an admin registers one" in html
    assert "python manage.py register_server" in html


def test_only_an_admin_sees_the_register_button(client_as):
    server()
    create = reverse("ui:server-create")
    assert create not in client_as("viewer").get(reverse("ui:server-list")).content.decode()
    assert create not in client_as("operator").get(reverse("ui:server-list")).content.decode()
    assert create in client_as("admin").get(reverse("ui:server-list")).content.decode()


def test_list_queries_do_not_grow_with_servers(client_as, upload):
    client = client_as("viewer")
    version = upload()
    first = server("s-0")
    deploy_row(version, first)
    client.get(reverse("ui:server-list"))  # warm the session and role caches alike for both runs

    with CaptureQueriesContext(connection) as one:
        client.get(reverse("ui:server-list"))
    for i in range(1, 30):
        deploy_row(version, server(f"s-{i}"), observed=ObservedState.FAILED)
    with CaptureQueriesContext(connection) as many:
        response = client.get(reverse("ui:server-list"))

    assert response.content.decode().count('data-testid="server-row"') == 30
    assert len(many) == len(one)


@pytest.mark.parametrize("name", ["ui:server-list", "ui:server-create"])
def test_list_and_create_send_anonymous_to_login_and_refuse_no_role(client, client_as, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and reverse("ui:login") in response["Location"]
    assert client_as(None).get(reverse(name)).status_code == 403


@pytest.mark.parametrize("name", ["ui:server-detail", "ui:server-served", "ui:server-edit"])
def test_server_pages_send_anonymous_to_login_and_refuse_no_role(client, client_as, name):
    server()
    response = client.get(reverse(name, args=["gpu-a"]))
    assert response.status_code == 302 and reverse("ui:login") in response["Location"]
    assert client_as(None).get(reverse(name, args=["gpu-a"])).status_code == 403


# --- one server ------------------------------------------------------------------------------


def test_unknown_server_is_404(client_as):
    assert client_as("viewer").get(detail_url("nope")).status_code == 404
    assert client_as("viewer").get(reverse("ui:server-served", args=["nope"])).status_code == 404


def test_viewer_sees_properties_deployments_health_memory_flags_and_charts(client_as, upload):
    srv = server("gpu-a", base_url="https://ops:hunter2@triton-a:8000", model_repository="/srv/models")
    version = upload("digits", 2)
    deployment = deploy_row(version, srv)
    now = timezone.now()
    CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.OK, server=srv, created_at=now)
    CheckResult.objects.create(
        kind=CheckKind.SERVER_HEALTH,
        status=Status.FAIL,
        server=srv,
        message="Triton server 'gpu-a': health (live) failed: connection refused",
        created_at=now - timedelta(minutes=1),
    )
    CheckResult.objects.create(
        kind=CheckKind.MEMORY,
        status=Status.WARN,
        server=srv,
        version=version,
        value=-10 * 2**20,
        message="the unload on 'gpu-a' gave back 10 MiB of gpu memory, but the last load took 300 MiB",
        details={"action": "unload", "device": "gpu", "load_delta_bytes": 300 * 2**20},
    )

    html = client_as("viewer").get(detail_url("gpu-a")).content.decode()

    assert "hunter2" not in html and "https://***@triton-a:8000" in html and "/srv/models" in html
    health = html.split('data-testid="server-health"')[1].split("</table>")[0]
    assert health.index('data-state="ok"') < health.index("connection refused")  # newest first
    memory = html.split('data-testid="server-memory-flags"')[1]
    assert 'class="diff"' in memory and "took 300 MiB" in memory and ">-10.0<" in memory and ">300.0<" in memory
    assert reverse("ui:version-detail", args=["digits", version.number]) in memory
    assert reverse("ui:deployment-detail", args=[deployment.pk]) in html
    assert 'data-testid="chart-server_utilisation"' in html and 'data-testid="chart-server_memory"' in html
    assert 'data-target="server:gpu-a"' in html
    assert reverse("ui:server-served", args=["gpu-a"]) in html


def test_server_page_queries_do_not_grow_with_deployments_or_results(client_as, upload):
    srv = server()
    versions = [upload("digits", factor) for factor in range(2, 6)]
    client = client_as("viewer")
    client.get(detail_url("gpu-a"))

    with CaptureQueriesContext(connection) as empty:
        client.get(detail_url("gpu-a"))
    for version in versions:
        deploy_row(version, srv)
        CheckResult.objects.create(kind=CheckKind.MEMORY, status=Status.OK, server=srv, version=version, value=1.0)
        CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.OK, server=srv)
    with CaptureQueriesContext(connection) as full:
        html = client.get(detail_url("gpu-a")).content.decode()

    assert all(reverse("ui:version-detail", args=["digits", v.number]) in html for v in versions)
    assert len(full) <= len(empty) + 1  # the deployments' page, counted only when there are rows
    assert len(full) <= 30


def test_health_history_pages_by_cursor_without_repeating_rows(client_as):
    srv = server()
    start = timezone.now()
    for i in range(25):
        CheckResult.objects.create(
            kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server=srv, message=f"down #{i:02d}",
            created_at=start + timedelta(seconds=i),
        )  # fmt: skip
    client = client_as("viewer")

    first = client.get(detail_url("gpu-a"))
    older = first.context["health"].older
    second = client.get(detail_url("gpu-a") + "?" + older).content.decode()

    first_html = first.content.decode()
    assert "down #24" in first_html and "down #05" in first_html and "down #04" not in first_html
    assert "down #04" in second and "down #00" in second and "down #05" not in second


def test_action_buttons_follow_the_role(client_as):
    server()
    delete = reverse("ui:server-delete", args=["gpu-a"])
    edit = reverse("ui:server-edit", args=["gpu-a"])
    check_now = reverse("ui:check-run-now")

    viewer = client_as("viewer").get(detail_url("gpu-a")).content.decode()
    operator = client_as("operator").get(detail_url("gpu-a")).content.decode()
    admin = client_as("admin").get(detail_url("gpu-a")).content.decode()

    assert check_now not in viewer and edit not in viewer and delete not in viewer
    assert check_now in operator and edit not in operator and delete not in operator
    assert 'name="server" value="gpu-a"' in operator
    assert check_now in admin and edit in admin and delete in admin


# --- what Triton serves beside what ModelHub wants -------------------------------------------


def test_served_box_says_triton_is_unreachable_with_its_error(client_as, upload):
    deploy_row(upload(), server())

    started = time.monotonic()
    response = client_as("viewer").get(reverse("ui:server-served", args=["gpu-a"]))

    assert time.monotonic() - started < 5
    html = response.content.decode()
    assert response.status_code == 200 and "data-final" in html
    assert 'data-testid="served-error"' in html and "127.0.0.1:9" in html and "repository index" in html


def test_served_box_answers_within_seconds_when_triton_hangs(client_as):
    # A socket that accepts and never answers: what a wedged Triton looks like.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        server(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}")

        started = time.monotonic()
        html = client_as("viewer").get(reverse("ui:server-served", args=["gpu-a"])).content.decode()

    assert time.monotonic() - started < 6
    assert 'data-testid="served-error"' in html and "no answer within" in html


def test_server_page_renders_at_once_whatever_triton_does(client_as):
    # The page itself never calls Triton: the served box is fetched after it renders.
    server(base_url="http://203.0.113.1:8000")  # TEST-NET-3: unroutable, would hang a call

    started = time.monotonic()
    response = client_as("viewer").get(detail_url("gpu-a"))

    assert response.status_code == 200 and time.monotonic() - started < 1
    assert 'data-testid="served-vs-wanted"' in response.content.decode()


def _deployment(model: str, number: int, desired: str, observed: str = ObservedState.LOADED) -> Deployment:
    # Unsaved rows: the comparison is plain Python over what the view read.
    version = ModelVersion(model=Model(name=model), number=number)
    return Deployment(pk=number, version=version, desired=desired, observed=observed)


def test_comparison_flags_each_way_triton_and_modelhub_disagree():
    deployments = [
        _deployment("agree", 1, DesiredState.LOADED),
        _deployment("missing", 2, DesiredState.LOADED),
        _deployment("failed", 1, DesiredState.LOADED, ObservedState.FAILED),
        _deployment("stale", 3, DesiredState.UNLOADED, ObservedState.UNLOADED),
        _deployment("gone", 1, DesiredState.UNLOADED, ObservedState.UNLOADED),
    ]
    served = {  # Triton's names: ModelHub's are <model>__v<n>
        ("agree__v1", "1"): Served("READY"),
        ("failed__v1", "1"): Served("UNAVAILABLE", "load failed: invalid model.py"),
        ("stale__v3", "3"): Served("READY"),
        ("stranger", "7"): Served("READY"),
        ("orphan__v4", "4"): Served("READY"),
        ("old__v1", "1"): Served("UNAVAILABLE", "unloaded"),
    }

    rows = {(r.model, r.version): r for r in compare_served(deployments, served, complete=True)}

    assert not rows["agree", "1"].diff and not rows["gone", "1"].diff
    assert rows["missing", "2"].diff and rows["missing", "2"].reason == "Triton does not serve this version"
    assert rows["failed", "1"].diff and rows["failed", "1"].reason == "load failed: invalid model.py"
    assert rows["stale", "3"].diff and "still serves" in rows["stale", "3"].reason
    assert rows["stranger", "7"].diff and rows["stranger", "7"].deployment is None
    assert "not ModelHub's: left alone" in rows["stranger", "7"].reason
    # A ModelHub name maps back to its model and version; one no deployment here wants is flagged.
    orphan = rows["orphan", "4"]
    assert orphan.diff and orphan.deployment is None and orphan.triton_name == "orphan__v4"
    assert orphan.reason == "served by Triton, but not a ModelHub deployment"
    assert rows["agree", "1"].triton_name == "agree__v1" and rows["agree", "1"].deployment is not None
    assert ("old", "1") not in rows  # unloaded and unwanted: nothing to say
    ordered = compare_served(deployments, served, complete=True)
    assert [r.diff for r in ordered] == sorted((r.diff for r in ordered), reverse=True)  # disagreements first
    partial = compare_served(deployments, served, complete=False)
    assert ("stranger", "7") not in {(r.model, r.version) for r in partial}


def test_credentials_are_hidden_in_urls_and_in_error_texts():
    assert hide_credentials("http://u:p@h:8000/x") == "http://***@h:8000/x"
    assert hide_credentials("http://h:8000/a@b") == "http://h:8000/a@b"
    said = "Triton server 'a': health failed: https://ops:s3cret@h:8000: refused; see http://h2:8002"
    assert hide_credentials(said) == "Triton server 'a': health failed: https://***@h:8000: refused; see http://h2:8002"


def test_a_password_in_a_server_url_never_reaches_a_page(client_as, upload):
    url = "http://ops:hunter2@127.0.0.1:9"
    srv = server(base_url=url, metrics_url=url + "/metrics", last_error=f"{url}: connection refused")
    deploy_row(upload(), srv, last_error=f"load failed: {url}: connection refused")
    CheckResult.objects.create(
        kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server=srv, message=f"{url}: connection refused"
    )
    client = client_as("admin")

    for page in ("ui:server-list", "ui:server-detail", "ui:server-served", "ui:server-edit"):
        html = client.get(reverse(page, args=[] if page == "ui:server-list" else ["gpu-a"])).content.decode()
        assert "hunter2" not in html and "***@127.0.0.1:9" in html, page


def test_an_edit_of_a_server_registered_with_credentials_says_to_remove_them_and_never_shows_them(client_as):
    # Credentials in server URLs are refused (ModelHub never sent them); rows from before remain.
    url = "http://ops:hunter2@127.0.0.1:9"
    srv = server(base_url=url)
    form = {"name": "gpu-a", "base_url": "http://***@127.0.0.1:9", "enabled": "on", "labels": "gpu"}

    response = client_as("admin").post(reverse("ui:server-edit", args=["gpu-a"]), form)

    html = response.content.decode()
    assert response.status_code == 200 and "must not contain a user name or password" in html
    assert "hunter2" not in html
    srv.refresh_from_db()
    assert srv.base_url == url and srv.labels != ["gpu"]
    assert not ui_events("inferenceserver.update").exists()


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_served_box_matches_a_loaded_model_then_shows_an_unload_behind_modelhubs_back(client_as, triton, upload):
    from modelhub.serving.services import request_deploy

    srv = server("local", base_url=triton.http_url, metrics_url=triton.metrics_url)
    version = upload("srv-ui-doubler", 2)
    [deployment] = request_deploy(version, [srv], Actor(source=Source.CLI))  # eager Celery: loads on commit
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    client = client_as("viewer")
    box = reverse("ui:server-served", args=["local"])
    row = f'data-model="srv-ui-doubler" data-version="{version.number}"'

    loaded = client.get(box).content.decode()
    assert f'{row} data-diff="false"' in loaded and "READY" in loaded

    triton_client = TritonClient.for_server(srv)
    try:
        triton_client.unload(f"srv-ui-doubler__v{version.number}")
    finally:
        triton_client.close()
    unloaded = client.get(box).content.decode()
    assert f'{row} data-diff="true"' in unloaded and 'class="diff"' in unloaded
    assert "Triton does not serve this version" in unloaded


# --- register, edit, delete ------------------------------------------------------------------

NEW_SERVER = {
    "name": "gpu-new",
    "base_url": "http://triton-new:8000",
    "metrics_url": "http://triton-new:8002/metrics",
    "enabled": "on",
    "labels": "staging, gpu, staging",
    "backends": "python",
    "model_repository": "",
}


def test_admin_registers_a_server_audited_as_the_uis(client_as):
    response = client_as("admin").post(reverse("ui:server-create"), NEW_SERVER, follow=True)

    assert response.redirect_chain[-1][0] == detail_url("gpu-new")
    created = InferenceServer.objects.get(name="gpu-new")
    assert created.labels == ["staging", "gpu"] and created.backends == ["python"] and created.enabled
    assert created.metrics_url == "http://triton-new:8002/metrics"
    assert ui_events("inferenceserver.create").filter(object_repr="gpu-new").count() == 1
    assert any("gpu-new" in m and "registered" in m for m in messages_of(response))


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("base_url", "ftp://triton-new:8000", "must be an http:// or https:// URL"),
        ("base_url", "http://triton-new:99999", "must be an http:// or https:// URL"),
        ("name", "Has Spaces", "lowercase"),
        ("model_repository", "relative/path", "absolute path"),
        ("labels", ", ".join(f"l{i}" for i in range(51)), "at most 50"),
    ],
)
def test_invalid_server_names_the_field_and_writes_nothing(client_as, field, value, says):
    response = client_as("admin").post(reverse("ui:server-create"), {**NEW_SERVER, field: value})

    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-testid="error-{field}"' in html and says in html
    assert not InferenceServer.objects.exists() and not AuditEvent.objects.exists()


def test_a_taken_name_is_refused_on_the_name_field(client_as):
    server("gpu-new")

    html = client_as("admin").post(reverse("ui:server-create"), NEW_SERVER).content.decode()

    assert 'data-testid="error-name"' in html and "a server named &#x27;gpu-new&#x27; already exists" in html
    assert InferenceServer.objects.count() == 1 and not ui_events("inferenceserver.create").exists()


def test_edit_form_shows_the_current_values(client_as):
    server(labels=["staging", "gpu"], backends=["python"])

    html = client_as("admin").get(reverse("ui:server-edit", args=["gpu-a"])).content.decode()

    assert 'value="staging, gpu"' in html and f'value="{CLOSED_URL}"' in html


def test_admin_edit_saves_only_the_changed_fields_audited_as_the_uis(client_as):
    srv = server(labels=["staging"], live=True)
    form = {"name": "gpu-a", "base_url": "http://triton-a2:8000", "enabled": "on", "labels": "staging, gpu"}

    response = client_as("admin").post(reverse("ui:server-edit", args=["gpu-a"]), form, follow=True)

    assert response.redirect_chain[-1][0] == detail_url("gpu-a")
    srv.refresh_from_db()
    assert srv.base_url == "http://triton-a2:8000" and srv.labels == ["staging", "gpu"] and srv.live
    [event] = ui_events("inferenceserver.update")
    assert event.details["fields"] == ["base_url", "labels"]
    assert any("changed base_url, labels" in m for m in messages_of(response))


def test_admin_renames_a_server(client_as):
    server()
    form = {"name": "gpu-b", "base_url": CLOSED_URL, "enabled": "on"}

    response = client_as("admin").post(reverse("ui:server-edit", args=["gpu-a"]), form)

    assert response["Location"] == detail_url("gpu-b")
    assert InferenceServer.objects.filter(name="gpu-b").exists()


def test_invalid_edit_names_the_field_and_changes_nothing(client_as):
    srv = server()
    form = {"name": "gpu-a", "base_url": "not a url", "enabled": "on"}

    html = client_as("admin").post(reverse("ui:server-edit", args=["gpu-a"]), form).content.decode()

    assert 'data-testid="error-base_url"' in html
    srv.refresh_from_db()
    assert srv.base_url == CLOSED_URL and not AuditEvent.objects.exists()


def test_admin_deletes_a_server_audited_as_the_uis(client_as, upload):
    srv = server()
    deploy_row(upload(), srv, desired=DesiredState.UNLOADED, observed=ObservedState.UNLOADED)

    response = client_as("admin").post(reverse("ui:server-delete", args=["gpu-a"]), follow=True)

    assert response.redirect_chain[-1][0] == reverse("ui:server-list")
    assert not InferenceServer.objects.exists() and not Deployment.objects.exists()
    assert ui_events("inferenceserver.delete").filter(object_repr="gpu-a").count() == 1
    assert any("deleted" in m for m in messages_of(response))


def test_delete_of_a_server_with_wanted_deployments_is_refused_naming_them(client_as, upload):
    srv = server()
    deploy_row(upload("digits", 2), srv)

    response = client_as("admin").post(reverse("ui:server-delete", args=["gpu-a"]), follow=True)

    assert response.redirect_chain[-1][0] == detail_url("gpu-a")
    [message] = messages_of(response)
    assert "digits v1" in message and "undeploy them first" in message
    assert InferenceServer.objects.filter(pk=srv.pk).exists() and not ui_events("inferenceserver.delete").exists()


def test_delete_is_post_only(client_as):
    server()
    assert client_as("admin").get(reverse("ui:server-delete", args=["gpu-a"])).status_code == 405
    assert InferenceServer.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_admin_may_create_edit_or_delete(client_as, role):
    srv = server()
    client = client_as(role)

    created = client.post(reverse("ui:server-create"), NEW_SERVER)
    edited = client.post(reverse("ui:server-edit", args=["gpu-a"]), {**NEW_SERVER, "name": "gpu-a"})
    deleted = client.post(reverse("ui:server-delete", args=["gpu-a"]))

    assert (created.status_code, edited.status_code, deleted.status_code) == (403, 403, 403)
    assert "admin" in deleted.content.decode()
    srv.refresh_from_db()
    assert list(InferenceServer.objects.values_list("name", flat=True)) == ["gpu-a"]
    assert srv.base_url == CLOSED_URL and not AuditEvent.objects.exists()


def test_triton_errors_never_carry_a_password_registered_in_the_url():
    from modelhub.serving.triton_client import TritonClient, TritonUnavailable

    client = TritonClient("gpu-a", "http://ops:hunter2@127.0.0.1:9", "http://ops:hunter2@127.0.0.1:9/metrics")
    for call in (client.server_metadata, client.scrape_metrics):
        with pytest.raises(TritonUnavailable) as raised:
            call()
        assert "hunter2" not in str(raised.value) and "***@127.0.0.1:9" in str(raised.value)


def test_an_error_stored_with_a_password_is_masked_on_every_page_that_shows_it(client_as, upload):
    url = "http://ops:hunter2@127.0.0.1:9"
    srv = server(base_url=url, last_error=f"{url}: connection refused")
    version = upload()
    deployment = deploy_row(version, srv, observed=ObservedState.FAILED, last_error=f"load failed: {url}: refused")
    client = client_as("viewer")
    pages = [
        reverse("ui:overview"),
        reverse("ui:model-detail", args=[version.model.name]),
        reverse("ui:deployment-detail", args=[deployment.pk]),
    ]
    for page in pages:
        html = client.get(page).content.decode()
        assert "hunter2" not in html and "***@127.0.0.1:9" in html, page


def test_a_drained_server_and_its_deployments_say_drained_on_the_pages(client_as, upload):
    from modelhub.serving.discovery import sync_group
    from modelhub.serving.models import ServerGroup

    group = ServerGroup.objects.create(name="fleet", dns_name="triton.example", port=9)
    sync_group(group.pk, lambda name, port: ["10.0.0.1"])
    server = InferenceServer.objects.get(name="fleet-10.0.0.1")
    Deployment.objects.create(version=upload(), server=server, observed=ObservedState.LOADED)
    sync_group(group.pk, lambda name, port: [])
    viewer = client_as("viewer")

    listing = viewer.get(reverse("ui:server-list")).content.decode()
    row = listing[listing.index('data-server="fleet-10.0.0.1"') :].split("</tr>")[0]
    assert 'data-state="drained"' in row and "1 drained" in row
    page = viewer.get(reverse("ui:server-detail", args=[server.name])).content.decode()
    assert "drained: its address left its group's DNS name" in page
    assert "fleet (triton.example), address 10.0.0.1; drained since" in page
