"""The tokens page: one's own tokens (an admin's: everyone's), created with the secret shown once, revoked."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from modelhub.api.models import ApiToken
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import Model
from modelhub.ui.forms.tokens import DEFAULT_LIFETIME_DAYS, MAX_LIFETIME_DAYS

LIST, NEW = reverse("ui:token-list"), reverse("ui:token-create")


def token_for(user, name="ci-main", scopes=("read",), **fields) -> ApiToken:
    return issue_token(name=name, user=user, scopes=scopes, actor=Actor(source=Source.CLI), **fields)[0]


def rows(response) -> dict[int, str]:
    page = response.content.decode()
    return {
        int(pk): row for pk, row in re.findall(r'<tr data-testid="token-row" data-token="(\d+)">(.*?)</tr>', page, re.S)
    }


def secret_of(response) -> str:
    return re.search(r'data-testid="token-secret">(mh_[A-Za-z0-9_]+)<', response.content.decode()).group(1)


# --- who may see what ------------------------------------------------------------------


@pytest.mark.parametrize("url", [LIST, NEW])
def test_anonymous_is_sent_to_login_and_no_role_is_refused(client, client_as, url):
    assert client.get(url).status_code == 302
    assert client_as(None).get(url).status_code == 403


def test_a_person_sees_their_own_tokens_only(client_as, make_person):
    viewer = client_as("viewer")
    mine = token_for(viewer.person, "mine")
    theirs = token_for(make_person("bob", "operator"), "theirs")
    shown = rows(viewer.get(LIST))
    assert set(shown) == {mine.pk}
    assert theirs.pk not in shown
    assert 'name="user"' not in viewer.get(LIST).content.decode()  # no filter by user for a non-admin


def test_an_admin_sees_everyones_tokens_and_filters_by_user(client_as, make_person):
    admin = client_as("admin")
    bob, carol = make_person("bob", "operator"), make_person("carol", "viewer")
    bobs, carols = token_for(bob, "b"), token_for(carol, "c")
    assert {bobs.pk, carols.pk} <= set(rows(admin.get(LIST)))
    assert set(rows(admin.get(LIST, {"user": "bob"}))) == {bobs.pk}


def test_rows_show_scopes_the_role_no_longer_grants_models_expiry_and_state(client_as, make_person):
    admin = client_as("admin")
    dana = make_person("dana", "admin")
    digits = Model.objects.create(name="digits")
    lapsed = token_for(dana, "lapsed", scopes=("read", "deploy", "upload"), models=[digits])
    dana.groups.set([Group.objects.get(name="operator")])  # demoted: upload lapses, deploy stays
    expired = token_for(dana, "old", expires_at=timezone.now() - timedelta(days=1))
    revoked = token_for(dana, "gone")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked=True)
    shown = rows(admin.get(LIST, {"user": "dana"}))
    assert "role no longer grants: upload" in shown[lapsed.pk] and "digits" in shown[lapsed.pk]
    assert "state-expired" in shown[expired.pk] and "state-revoked" in shown[revoked.pk]
    assert "Revoke" in shown[lapsed.pk] and "Revoke" not in shown[revoked.pk]


def test_the_list_costs_the_same_queries_for_many_tokens(client_as, make_person, django_assert_max_num_queries):
    admin = client_as("admin")
    digits = Model.objects.create(name="digits")
    token_for(make_person("u0", "viewer"), models=[digits])
    admin.get(LIST)
    with CaptureQueriesContext(connection) as few:
        admin.get(LIST)
    for i in range(1, 12):
        token_for(make_person(f"u{i}", "operator"), scopes=("deploy",), models=[digits])
    with django_assert_max_num_queries(len(few)):
        assert len(rows(admin.get(LIST))) == 12


# --- create: the secret shown once ---------------------------------------------------------


def test_the_form_offers_the_roles_scopes_with_a_default_expiry(client_as):
    page = client_as("operator").get(NEW).content.decode()
    offered = set(re.findall(r'name="scopes" value="(\w+)"', page))
    assert offered == {"read", "deploy", "infer"}
    assert f'name="expires_in_days" value="{DEFAULT_LIFETIME_DAYS}"' in page


def test_creating_shows_the_secret_once_and_it_authenticates_with_the_chosen_scopes(client_as, client):
    operator = client_as("operator")
    Model.objects.create(name="digits")
    response = operator.post(
        NEW, {"name": "ci-main", "scopes": ["deploy"], "expires_in_days": "30", "models": ["digits"]}
    )
    assert response.status_code == 200
    secret = secret_of(response)
    page = response.content.decode()
    assert "Copy it now, it is not shown again" in page
    assert "no-store" in response["Cache-Control"]
    # Not in the messages cookie, the session, the list or a reload of the list.
    assert secret not in str(response.cookies) and secret not in str(dict(operator.session))
    assert secret not in operator.get(LIST).content.decode()
    token = ApiToken.objects.get(name="ci-main")
    assert token.user == operator.person and token.scopes == ["deploy"]
    assert list(token.allowed_models.values_list("name", flat=True)) == ["digits"]
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    whoami = client.get("/api/v1/whoami/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert whoami.status_code == 200
    assert whoami.json()["user"] == "operator-person" and whoami.json()["scopes"] == ["deploy", "read"]
    event = AuditEvent.objects.get(action="token.create")
    assert event.source == Source.UI and event.actor == "user:operator-person"


def test_a_scope_beyond_the_role_is_refused_by_name_and_nothing_is_written(client_as):
    response = client_as("viewer").post(NEW, {"name": "sneaky", "scopes": ["read", "deploy"], "expires_in_days": "30"})
    assert response.status_code == 400
    assert "Scopes: your role does not allow &#x27;deploy&#x27;" in response.content.decode()
    assert not ApiToken.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "", "scopes": ["read"], "expires_in_days": "30"}, "Name: This field is required."),
        ({"name": "x", "expires_in_days": "30"}, "Scopes: This field is required."),
        ({"name": "x", "scopes": ["read"], "expires_in_days": ""}, "Expires in (days): This field is required."),
        (
            {"name": "x", "scopes": ["read"], "expires_in_days": str(MAX_LIFETIME_DAYS + 1)},
            f"Expires in (days): Ensure this value is less than or equal to {MAX_LIFETIME_DAYS}.",
        ),
        (
            {"name": "x", "scopes": ["read"], "expires_in_days": "30", "models": ["nope"]},
            "Only these models: Select a valid choice.",
        ),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(client_as, data, message):
    response = client_as("viewer").post(NEW, data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ApiToken.objects.exists()


# --- revoke ----------------------------------------------------------------------------


def test_the_owner_revokes_their_token_audited_from_the_ui(client_as):
    viewer = client_as("viewer")
    token = token_for(viewer.person)
    response = viewer.post(reverse("ui:token-revoke", args=[token.pk]), follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert "Token &#x27;ci-main&#x27; of viewer-person revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked
    assert AuditEvent.objects.get(action="token.revoke").source == Source.UI


def test_a_viewer_revoking_someone_elses_token_is_refused_and_nothing_changes(client_as, make_person):
    token = token_for(make_person("bob", "operator"))
    response = client_as("viewer").post(reverse("ui:token-revoke", args=[token.pk]))
    assert response.status_code == 403
    assert "only the token&#x27;s owner or an admin may revoke it" in response.content.decode()
    token.refresh_from_db()
    assert not token.revoked and not AuditEvent.objects.filter(action="token.revoke").exists()


def test_an_admin_revokes_anyones_token(client_as, make_person):
    token = token_for(make_person("bob", "operator"))
    admin = client_as("admin")
    assert "Revoke" in rows(admin.get(LIST))[token.pk]
    assert admin.post(reverse("ui:token-revoke", args=[token.pk])).status_code == 302
    token.refresh_from_db()
    assert token.revoked
    assert AuditEvent.objects.get(action="token.revoke").actor == "user:admin-person"


def test_revoke_is_post_only_and_unknown_tokens_are_404(client_as):
    viewer = client_as("viewer")
    token = token_for(viewer.person)
    assert viewer.get(reverse("ui:token-revoke", args=[token.pk])).status_code == 405
    assert viewer.post(reverse("ui:token-revoke", args=[token.pk + 999])).status_code == 404
    token.refresh_from_db()
    assert not token.revoked
