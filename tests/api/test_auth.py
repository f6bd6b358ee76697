"""Who may call the API: tokens (scopes, expiry, revocation, model restriction) and people (roles)."""

import json
from datetime import timedelta
from importlib import import_module
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils.crypto import get_random_string
from rest_framework.test import APIClient

from modelhub.api.models import ApiToken, hash_secret
from modelhub.api.tokens import revoke_token
from modelhub.audit.actors import SYSTEM, Actor
from modelhub.audit.log import record
from modelhub.audit.models import AuditEvent
from modelhub.registry.models import Model
from modelhub.serving.models import InferenceServer
from tests.api.conftest import bearer, error_of, files_under, upload

pytestmark = pytest.mark.django_db


def test_roles_exist_as_groups():
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator", "admin"}


def test_no_credentials_is_401_with_a_bearer_challenge():
    response = APIClient().get("/api/v1/models/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    error = error_of(response)
    assert error["code"] == "not_authenticated"


@pytest.mark.parametrize(
    "header, message",
    [
        ("Bearer mh_AAAAAAAA_" + "A" * 40, "invalid API token"),
        ("Bearer not-a-token", "malformed API token"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer a b", "malformed Authorization header"),
    ],
)
def test_bad_tokens_are_401_saying_why(header, message):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/models/")
    assert response.status_code == 401
    assert message in error_of(response)["message"]


def test_a_wrong_secret_for_a_real_prefix_reads_like_an_unknown_token(make_token):
    text = make_token("read")
    forged = text[:-1] + ("A" if text[-1] != "A" else "B")
    response = bearer(forged).get("/api/v1/models/")
    assert response.status_code == 401
    assert error_of(response)["message"] == "invalid API token"


def test_expired_token_is_401_naming_the_expiry(make_token):
    text = make_token("read", expires_in=timedelta(seconds=-1), name="old-ci")
    response = bearer(text).get("/api/v1/models/")
    assert response.status_code == 401
    message = error_of(response)["message"]
    assert "'old-ci' expired at" in message


def test_revoked_token_is_401(make_token):
    text = make_token("admin", name="leaked")
    token = ApiToken.objects.get(name="leaked")
    revoke_token(token, Actor())
    response = bearer(text).get("/api/v1/models/")
    assert response.status_code == 401
    assert "'leaked' has been revoked" in error_of(response)["message"]
    assert AuditEvent.objects.filter(action="token.revoke", object_id=str(token.pk)).exists()


def test_token_of_an_inactive_user_is_401(make_token, ci_user):
    text = make_token("read")
    ci_user.is_active = False
    ci_user.save()
    response = bearer(text).get("/api/v1/models/")
    assert response.status_code == 401
    assert "inactive user" in error_of(response)["message"]


def test_only_the_hash_of_the_secret_is_stored_and_use_is_recorded(make_token):
    text = make_token("read", name="stored")
    prefix, secret = text.split("_")[1:]
    token = ApiToken.objects.get(name="stored")
    assert token.prefix == prefix
    assert token.secret_hash == hash_secret(secret)
    assert secret not in str(ApiToken.objects.filter(pk=token.pk).values().get())
    assert token.last_used_at is None
    assert bearer(text).get("/api/v1/whoami/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_whoami_shows_the_token_and_its_scopes(make_token, registered):
    registered("digits")
    text = make_token("upload", models=["digits"], name="ci-main")
    body = bearer(text).get("/api/v1/whoami/").json()
    assert body["user"] == "ci"
    assert body["scopes"] == ["read", "upload"]  # upload implies read
    assert body["token"]["name"] == "ci-main"
    assert body["token"]["models"] == ["digits"]


# --- a token does no more than its user's role -----------------------------------------


def test_a_demoted_users_tokens_lose_what_the_role_lost(make_user, make_token, registered, dead_server):
    registered("digits")
    dana = make_user("dana", "admin")
    text = make_token("admin", name="dana-ci", user=dana)
    client = bearer(text)
    assert client.patch("/api/v1/servers/dead/", {"labels": ["gpu"]}, format="json").status_code == 200

    dana.groups.set([Group.objects.get(name="operator")])
    assert client.get("/api/v1/whoami/").json()["scopes"] == ["deploy", "infer", "read"]  # the operator role's
    response = client.patch("/api/v1/servers/dead/", {"labels": []}, format="json")
    assert response.status_code == 403
    assert "has the 'admin' scope but its user 'dana' no longer does" in error_of(response)["message"]
    deploy = client.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    assert deploy.status_code == 202  # what the role still holds, the token still does

    dana.groups.clear()  # no role: nothing at all
    assert client.get("/api/v1/whoami/").json()["scopes"] == []
    assert client.get("/api/v1/models/").status_code == 403

    dana.is_superuser = True  # a superuser is an admin
    dana.save()
    assert client.get("/api/v1/whoami/").json()["scopes"] == ["admin", "deploy", "infer", "read", "upload"]


def test_whoami_shows_the_scopes_in_effect_and_the_token_as_issued(make_user, make_token):
    viewer = make_user("vic", "viewer")
    body = bearer(make_token("upload", "deploy", name="vic-ci", user=viewer)).get("/api/v1/whoami/").json()
    assert body["scopes"] == ["read"]
    assert body["token"]["scopes"] == ["deploy", "upload"]


# --- scopes, per action ----------------------------------------------------------

# (method, path, body) -> the scope it needs; each is tried with every scope.
ACTIONS = {
    "read": [("get", "/api/v1/models/", None), ("get", "/api/v1/models/digits/versions/1/", None)],
    "upload": [
        ("post", "/api/v1/models/", {"name": "new-model"}),
        ("patch", "/api/v1/models/digits/", {"description": "d"}),
    ],
    "deploy": [
        ("post", "/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}),
        ("put", "/api/v1/models/digits/aliases/production/", {"version": 1}),
    ],
    "admin": [
        ("post", "/api/v1/servers/", {"name": "new-server", "base_url": "http://127.0.0.1:9"}),
        ("patch", "/api/v1/servers/dead/", {"enabled": False}),
    ],
}
GRANTS = {
    "read": {"read"},
    "upload": {"read", "upload"},
    "deploy": {"read", "deploy"},
    "admin": {"read", "upload", "deploy", "admin"},
}


@pytest.mark.parametrize("scope", ["read", "upload", "deploy", "admin"])
@pytest.mark.parametrize("needed", ["read", "upload", "deploy", "admin"])
def test_each_token_scope_allows_exactly_its_actions(scope, needed, client_with, registered, dead_server):
    registered("digits")
    client = client_with(scope)
    for method, path, body in ACTIONS[needed]:
        response = getattr(client, method)(path, body, format="json")
        if needed in GRANTS[scope]:
            assert response.status_code in (200, 201, 202), (method, path, response.json())
        else:
            assert response.status_code == 403, (method, path, response.json())
            error = error_of(response)
            assert error["code"] == "permission_denied"
            assert f"lacks the {needed!r} scope" in error["message"]


# --- people, by role -------------------------------------------------------------

ROLE_GRANTS = {
    None: set(),
    "viewer": {"read"},
    "operator": {"read", "deploy"},
    "admin": {"read", "upload", "deploy", "admin"},
}


@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"])
@pytest.mark.parametrize("needed", ["read", "upload", "deploy", "admin"])
def test_people_roles_allow_exactly_their_actions(role, needed, session_client, registered, dead_server):
    registered("digits")
    client = session_client(role)
    for method, path, body in ACTIONS[needed]:
        response = getattr(client, method)(path, body, format="json")
        if needed in ROLE_GRANTS[role]:
            assert response.status_code in (200, 201, 202), (method, path, response.json())
        else:
            assert response.status_code == 403, (method, path, response.json())
            assert "your role does not allow" in error_of(response)["message"]


def test_a_person_who_may_not_upload_is_refused_before_the_body_is_read(
    make_user, registered, doubler_artifact, doubler_manifest, settings, tmp_path
):
    registered("digits")
    # Nowhere to write: any attempt to stream the artifact to a temporary file fails loudly.
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "no-such-folder")
    make_user("otto", "operator")
    client = APIClient(enforce_csrf_checks=True)  # the CSRF check is what reads the form
    client.login(username="otto", password="pw-otto")
    csrf = get_random_string(32)
    client.cookies["csrftoken"] = csrf
    response = upload(client, "digits", doubler_artifact(factor=7), doubler_manifest, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 403, response.content
    assert "your role does not allow 'upload'" in error_of(response)["message"]
    assert not (tmp_path / "no-such-folder").exists()

    anonymous = upload(APIClient(), "digits", doubler_artifact(factor=7), doubler_manifest)
    assert anonymous.status_code == 401


def test_a_person_who_may_upload_still_needs_the_csrf_token_and_then_uploads(
    make_user, registered, doubler_artifact, doubler_manifest, settings
):
    registered("digits")
    make_user("ada", "admin")
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="ada", password="pw-ada")
    csrf = get_random_string(32)
    client.cookies["csrftoken"] = csrf
    refused = upload(client, "digits", doubler_artifact(factor=7), doubler_manifest)
    assert refused.status_code == 403 and "CSRF" in error_of(refused)["message"]
    assert files_under(settings.FILE_UPLOAD_TEMP_DIR) == []
    response = upload(client, "digits", doubler_artifact(factor=7), doubler_manifest, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201, response.content
    assert files_under(settings.FILE_UPLOAD_TEMP_DIR) == []


def test_a_superuser_is_an_admin(session_client, registered):
    registered("digits")
    client = session_client(None, is_superuser=True)
    assert client.delete("/api/v1/models/digits/").status_code == 204


def test_session_writes_need_the_csrf_token(make_user):
    make_user("olga", "operator")
    client = Client(enforce_csrf_checks=True)
    client.login(username="olga", password="pw-olga")
    response = client.post("/api/v1/models/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


def test_session_writes_are_audited_as_the_ui_user(session_client, registered):
    registered("digits")
    client = session_client("admin")
    assert client.patch("/api/v1/models/digits/", {"description": "by hand"}, format="json").status_code == 200
    event = AuditEvent.objects.get(action="model.update")
    assert event.source == "ui"
    assert event.actor.startswith("user:person-admin")
    assert event.token_id is None


# --- tokens restricted to some models ----------------------------------------------


@pytest.fixture
def two_models(registered):
    registered("digits")
    registered("faces")


def test_a_restricted_token_sees_only_its_models(two_models, client_with):
    client = client_with("read", models=["digits"])
    names = [m["name"] for m in client.get("/api/v1/models/").json()["results"]]
    assert names == ["digits"]
    assert client.get("/api/v1/models/digits/versions/1/").status_code == 200


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/v1/models/faces/", None),
        ("get", "/api/v1/models/faces/versions/", None),
        ("get", "/api/v1/models/faces/versions/1/", None),
        ("get", "/api/v1/models/faces/aliases/", None),
        ("get", "/api/v1/models/faces/alias-history/", None),
        ("post", "/api/v1/models/faces/versions/1/deploy/", {"server": "dead"}),
        ("put", "/api/v1/models/faces/aliases/production/", {"version": 1}),
        ("delete", "/api/v1/models/faces/", None),
        ("patch", "/api/v1/models/faces/", {"description": "x"}),
    ],
)
def test_another_models_objects_are_404_to_a_restricted_token(two_models, client_with, dead_server, method, path, body):
    client = client_with("admin", models=["digits"])
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == 404, response.json()
    assert error_of(response)["code"] == "not_found"


def test_a_restricted_token_cannot_create_models(two_models, client_with):
    client = client_with("admin", models=["digits"])
    response = client.post("/api/v1/models/", {"name": "other"}, format="json")
    assert response.status_code == 403
    assert "restricted to the models digits: it cannot create models" in error_of(response)["message"]
    assert not Model.objects.filter(name="other").exists()


def test_a_restricted_token_cannot_create_or_change_servers(client_with, dead_server, registered):
    registered("digits")
    client = client_with("admin", models=["digits"])
    created = client.post("/api/v1/servers/", {"name": "elsewhere", "base_url": "http://evil:8000"}, format="json")
    changed = client.patch("/api/v1/servers/dead/", {"base_url": "http://evil:8000"}, format="json")
    for response in (created, changed):
        assert response.status_code == 403
        assert "restricted to the models digits: it cannot" in error_of(response)["message"]
        assert "inference servers" in error_of(response)["message"]
    dead_server.refresh_from_db()
    assert dead_server.base_url == "http://127.0.0.1:9"
    assert not InferenceServer.objects.filter(name="elsewhere").exists()
    # Reading them is allowed: a deploy names a server.
    assert [s["name"] for s in client.get("/api/v1/servers/").json()["results"]] == ["dead"]
    assert client.get("/api/v1/servers/dead/").status_code == 200


def test_a_restricted_token_reads_the_audit_rows_of_its_models_only(two_models, client_with, admin_api, dead_server):
    for model in ("digits", "faces"):
        response = admin_api.post(f"/api/v1/models/{model}/versions/1/deploy/", {"server": "dead"}, format="json")
        assert response.status_code == 202
    # A load on a server names its model only: such rows follow the name.
    record(SYSTEM, "triton.load_failed", dead_server, model="digits", error="boom")
    record(SYSTEM, "triton.load_failed", dead_server, model="faces", error="boom")
    client = client_with("read", models=["digits"])
    events = client.get("/api/v1/audit/?limit=100").json()["results"]
    assert {e["action"] for e in events} == {
        "model.create",
        "version.register",
        "deployment.deploy",
        "triton.load_failed",
    }
    assert all("faces" not in json.dumps(e) for e in events), events
    assert all(e["object_type"] != "api.apitoken" for e in events)
    everything = admin_api.get("/api/v1/audit/?limit=100").json()["results"]
    hidden = next(e for e in everything if e["action"] == "deployment.deploy" and "faces" in e["object_repr"])
    assert client.get(f"/api/v1/audit/{hidden['id']}/").status_code == 404


def test_audit_rows_know_the_model_of_their_object(registered, admin_api, dead_server):
    model = registered("digits")
    admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 1}, format="json")
    rows = AuditEvent.objects.filter(action__in=["model.create", "version.register", "deployment.deploy"])
    assert rows.count() == 3
    assert {(e.model_id, e.model_name) for e in rows} == {(model.pk, "digits")}
    server_rows = AuditEvent.objects.filter(object_type="serving.inferenceserver")
    assert all(e.model_id is None for e in server_rows)


def test_the_migration_fills_in_the_model_of_old_audit_rows(registered, admin_api, dead_server):
    model = registered("digits")
    admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    record(SYSTEM, "triton.load", dead_server, model="digits")
    before = {e.pk: (e.model_id, e.model_name) for e in AuditEvent.objects.all()}
    AuditEvent.objects.update(model_id=None, model_name="")  # as rows written before the columns were
    backfill = import_module("modelhub.audit.migrations.0002_event_model").backfill
    backfill(django_apps, None)
    after = {e.pk: (e.model_id, e.model_name) for e in AuditEvent.objects.all()}
    assert after == before
    assert (model.pk, "digits") in after.values() and (None, "digits") in after.values()


def test_a_restricted_token_whose_models_were_deleted_sees_nothing(two_models, client_with, admin_api):
    client = client_with("read", models=["digits"])
    assert admin_api.delete("/api/v1/models/digits/").status_code == 204
    assert client.get("/api/v1/models/").json()["count"] == 0  # not: every model


def test_deployments_of_other_models_are_hidden_from_a_restricted_token(
    two_models, client_with, admin_api, dead_server
):
    for model in ("digits", "faces"):
        assert (
            admin_api.post(f"/api/v1/models/{model}/versions/1/deploy/", {"server": "dead"}, format="json").status_code
            == 202
        )
    client = client_with("read", models=["digits"])
    listed = client.get("/api/v1/deployments/").json()["results"]
    assert [d["model"] for d in listed] == ["digits"]
    other = admin_api.get("/api/v1/deployments/?model=faces").json()["results"][0]["id"]
    assert client.get(f"/api/v1/deployments/{other}/").status_code == 404


# --- issuing tokens ----------------------------------------------------------------


def test_create_api_token_command_prints_a_working_token(make_user, registered):
    registered("digits")
    make_user("alice", "admin")  # upload needs the admin role
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_token",
        "--user=alice",
        "--scopes=read,upload,deploy",
        "--models=digits",
        "--expires-in-days=90",
        "--name=ci-main",
        stdout=out,
        stderr=err,
    )
    text = out.getvalue().strip()
    assert text.startswith("mh_") and "\n" not in text
    assert "shown once" in err.getvalue()
    body = bearer(text).get("/api/v1/whoami/").json()
    assert body["user"] == "alice"
    assert body["token"]["scopes"] == ["deploy", "read", "upload"]
    assert body["token"]["models"] == ["digits"]
    token = ApiToken.objects.get(name="ci-main")
    assert timedelta(days=89) < token.expires_at - token.created_at <= timedelta(days=90)
    assert AuditEvent.objects.filter(action="token.create", object_id=str(token.pk), source="cli").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--user=nobody", "--name=x"], "no user 'nobody'"),
        (["--user=alice", "--name=x", "--scopes=read,root"], "unknown or no scopes ['root']"),
        (["--user=alice", "--name=x", "--models=ghost"], "no model(s) ghost"),
        (["--user=alice", "--name=x", "--expires-in-days=-1"], "--expires-in-days"),
        (["--user=alice", "--name=x", "--scopes=read,deploy"], "may not use the scope(s) deploy"),
    ],
)
def test_create_api_token_command_refuses_bad_arguments(make_user, args, message):
    make_user("alice", "viewer")
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        call_command("create_api_token", *args, stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


def test_admin_creates_a_token_and_shows_its_secret_once(make_user, registered):
    registered("digits")
    make_user("alice", "operator")
    staff = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    alice = staff.__class__.objects.get(username="alice")
    from modelhub.registry.models import Model

    response = client.post(
        "/admin/api/apitoken/add/",
        {
            "name": "from-admin",
            "user": alice.pk,
            "scopes": ["read", "deploy"],
            "allowed_models": [Model.objects.get(name="digits").pk],
            "expires_at_0": "2099-01-01",
            "expires_at_1": "00:00:00",
        },
        follow=True,
    )
    # The add view itself renders the secret, once; nothing goes into a message (a cookie).
    assert response.status_code == 200
    assert response.redirect_chain == []
    assert "no-store" in response["Cache-Control"]
    text = response.context["token_text"]
    assert text.startswith("mh_") and text in response.content.decode()
    assert not list(response.context.get("messages", []))
    assert "messages" not in response.cookies and "messages" not in client.cookies
    token = ApiToken.objects.get(name="from-admin")
    assert token.restricted and token.scopes == ["read", "deploy"]
    assert bearer(text).get("/api/v1/models/digits/").status_code == 200
    assert text not in client.get(f"/admin/api/apitoken/{token.pk}/change/").content.decode()
    assert text not in client.get("/admin/api/apitoken/").content.decode()
    assert AuditEvent.objects.filter(action="apitoken.create", source="admin").exists()


@pytest.fixture
def admin_browser(make_user):
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def _change_form(token: ApiToken, **changes) -> dict:
    data = {
        "name": token.name,
        "user": token.user_id,
        "scopes": token.scopes,
        "allowed_models": list(token.allowed_models.values_list("pk", flat=True)),
        "expires_at_0": "2099-01-01",
        "expires_at_1": "00:00:00",
    }
    if token.revoked:
        data["revoked"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_revoking_in_the_admin_goes_through_revoke_token_and_cannot_be_undone(admin_browser, make_token):
    text = make_token("read", name="leaky")
    token = ApiToken.objects.get(name="leaky")
    url = f"/admin/api/apitoken/{token.pk}/change/"
    response = admin_browser.post(url, _change_form(token, revoked="on"))
    assert response.status_code == 302, response.content[:2000]
    assert AuditEvent.objects.filter(action="token.revoke", object_id=str(token.pk), source="admin").count() == 1
    assert bearer(text).get("/api/v1/whoami/").status_code == 401

    # Once revoked, every field is read-only: posting "not revoked" (or a new user) changes nothing.
    token.refresh_from_db()
    page = admin_browser.get(url).content.decode()
    assert 'name="revoked"' not in page and 'name="scopes"' not in page
    admin_browser.post(url, _change_form(token, revoked=None, name="renamed"))
    token.refresh_from_db()
    assert token.revoked and token.name == "leaky"
    assert bearer(text).get("/api/v1/whoami/").status_code == 401


def test_only_admins_by_role_manage_tokens_in_the_admin(make_user):
    staff = make_user("stan", "operator", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="api"))
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/api/apitoken/").status_code == 403
    assert client.get("/admin/api/apitoken/add/").status_code == 403
