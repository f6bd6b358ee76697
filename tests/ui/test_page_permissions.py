"""Who may open which page and take which action in the UI, for every role.

The pages come from the URL resolver (namespace `ui`), not from a list kept by hand: a
page added without a line in EXPECTED fails `test_every_page_has_an_expectation`. Each
line names the scope the page needs, the same scope the REST API asks for the same action
(both read roles from modelhub.api.permissions). Each caller (anonymous, a person with no
role, viewer, operator, admin) is then expected to get exactly that: anonymous callers
are sent to the login page, people whose role lacks the scope get a 403 naming it, and a
refused write leaves no audit row behind.

Writes run in a savepoint rolled back after each call, so every caller meets the same
world: a model with two versions and a production alias moved once, an undeployed
deployment on a server nothing listens on (127.0.0.1:9), a firing alert, a check result.
"""

import html
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from modelhub.alerts.models import Alert, AlertState
from modelhub.alerts.services import create_rule
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.schedules import ensure_schedules
from modelhub.registry.services import move_alias, register_upload
from modelhub.serving.models import Deployment, DesiredState, InferenceServer
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db

PUBLIC = "public"  # anyone, signed in or not
ANY = "any"  # anyone signed in, whatever their role


@dataclass(frozen=True)
class Page:
    scope: str
    method: str = "get"  # the method that does the page's work (post: an action)
    args: str = ""  # which world object the URL names (see url_kwargs)


EXPECTED: dict[str, Page] = {
    "overview": Page("read"),
    "healthz": Page(PUBLIC),
    "login": Page(PUBLIC),
    "logout": Page(ANY, "post"),
    "model-list": Page("read"),
    "model-detail": Page("read", args="model"),
    "alias-promote": Page("deploy", "post", "model"),
    "alias-move": Page("deploy", "post", "alias"),
    "alias-rollback": Page("deploy", "post", "alias"),
    "alias-canary": Page("deploy", "post", "alias"),
    "alias-canary-promote": Page("deploy", "post", "alias"),
    "alias-canary-abort": Page("deploy", "post", "alias"),
    "canary-compare": Page("read", args="alias"),
    "version-detail": Page("read", args="version"),
    "version-compare": Page("read", args="version"),
    "version-artifact": Page("read", args="version"),
    "version-deploy": Page("deploy", "post", "version"),
    "version-undeploy": Page("deploy", "post", "version"),
    "version-accuracy": Page("upload", "post", "version"),
    "version-accuracy-status": Page("read", args="version"),
    "version-drift": Page("read", args="version"),
    "deployment-detail": Page("read", args="deployment"),
    "deployment-status": Page("read", args="deployment"),
    "server-list": Page("read"),
    "server-create": Page("admin"),
    "server-detail": Page("read", args="server"),
    "server-served": Page("read", args="server"),
    "server-edit": Page("admin", args="server"),
    "server-delete": Page("admin", "post", "server"),
    "alert-list": Page("read"),
    "alert-detail": Page("read", args="alert"),
    "alert-acknowledge": Page("deploy", "post", "alert"),
    "alert-silence": Page("deploy", "post", "alert"),
    "alert-unsilence": Page("deploy", "post", "alert"),
    "rule-list": Page("read"),
    "rule-create": Page("deploy"),
    "rule-edit": Page("deploy", args="rule"),
    "rule-delete": Page("deploy", "post", "rule"),
    "check-list": Page("read"),
    "check-detail": Page("read", args="check"),
    "check-run-now": Page("deploy", "post"),
    "schedule-list": Page("read"),
    "schedule-edit": Page("admin", args="schedule"),
    "audit-list": Page("read"),
    "token-list": Page("read"),
    "token-create": Page("read"),
    "token-revoke": Page("read", "post", "own-token"),  # someone else's token: admin only (test_tokens)
    "chart-data": Page("read", args="chart"),
}

ROLES = (None, "viewer", "operator", "admin")
ROLE_GRANTS = {
    None: set(),
    "viewer": {"read"},
    "operator": {"read", "deploy"},
    "admin": {"read", "upload", "deploy", "admin"},
}


def ui_url_names() -> list[str]:
    def walk(patterns, namespace=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, p.namespace or namespace)
            elif isinstance(p, URLPattern) and namespace == "ui":
                yield p.name

    return sorted(walk(get_resolver().url_patterns))


def test_every_page_has_an_expectation():
    names = ui_url_names()
    assert set(names) == set(EXPECTED), (
        f"pages without a rule: {sorted(set(names) - set(EXPECTED))}; "
        f"rules without a page: {sorted(set(EXPECTED) - set(names))}"
    )


@pytest.mark.parametrize("name", sorted(n for n, p in EXPECTED.items() if p.scope not in (PUBLIC, ANY)))
def test_the_view_declares_the_scope_the_api_asks_for(name):
    """The decorator's scope is what the 403 and the buttons follow; it must be the rule's."""
    world = World.build()
    match = get_resolver().resolve(reverse(f"ui:{name}", kwargs=world.url_kwargs(EXPECTED[name].args, None)))
    assert getattr(match.func, "required_scope", None) == EXPECTED[name].scope


# --- the world ------------------------------------------------------------------------------


@dataclass
class World:
    model: object
    v1: object
    v2: object
    server: object
    deployment: object
    alert: object
    rule: object
    check: object
    schedule: object

    @classmethod
    def build(cls, tmp_path=None) -> "World":
        import tempfile
        from pathlib import Path

        folder = Path(tmp_path or tempfile.mkdtemp())
        actor = Actor(source=Source.CLI)
        versions = [
            register_upload(
                "digits",
                make_zip(folder / f"v{n}.zip", {"1/model.py": doubler_source(n + 1)}),
                DOUBLER_MANIFEST,
                actor,
                create=True,
            ).version
            for n in (1, 2)
        ]
        move_alias(versions[0].model, "production", versions[0], actor)
        move_alias(versions[0].model, "production", versions[1], actor)
        server = InferenceServer.objects.create(name="srv", base_url="http://127.0.0.1:9")
        deployment = Deployment.objects.create(version=versions[0], server=server, desired=DesiredState.UNLOADED)
        check = CheckResult.objects.create(
            kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server=server, value=0.0, message="refused"
        )
        rule = create_rule(actor, name="srv down", signal="server_down", scope="server", server=server)
        alert = Alert.objects.create(
            rule=rule,
            target=f"server:{server.pk}",
            target_label="srv",
            server=server,
            state=AlertState.FIRING,
            since=timezone.now(),
            last_message="refused",
        )
        if not PeriodicTask.objects.exists():
            ensure_schedules()
        return cls(versions[0].model, *versions, server, deployment, alert, rule, check, PeriodicTask.objects.first())

    def url_kwargs(self, args: str, user) -> dict:
        if args == "model":
            return {"name": self.model.name}
        if args == "alias":
            return {"name": self.model.name, "alias": "production"}
        if args == "version":
            return {"name": self.model.name, "number": self.v1.number}
        if args == "deployment":
            return {"pk": self.deployment.pk}
        if args == "server":
            return {"name": self.server.name}
        if args == "alert":
            return {"pk": self.alert.pk}
        if args == "rule":
            return {"pk": self.rule.pk}
        if args == "check":
            return {"pk": self.check.pk}
        if args == "schedule":
            return {"pk": self.schedule.pk}
        if args == "chart":
            return {"chart": "server_up"}
        if args == "own-token":
            owner = user or User.objects.create_user("token-owner-anon")
            token, _ = issue_token(
                name="mine", user=owner, scopes=["read"], models=[], expires_at=None, actor=Actor(Source.CLI)
            )
            return {"pk": token.pk}
        assert not args, args
        return {}


def query_for(name: str, world: World) -> dict:
    """Query parameters a page needs to do its work (the chart's target, the version to compare with)."""
    if name == "chart-data":
        return {"target": f"server:{world.server.name}", "range": "1h"}
    if name == "version-compare":
        return {"with": world.v2.number}
    return {}


def person(role: str | None) -> User:
    user = User.objects.create_user(f"person-{role}", password="pw")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def call(client: Client, method: str, url: str, query: dict):
    if method == "post":
        return client.post(url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""))
    return client.get(url, query)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_role_gets_what_the_rule_says(name, tmp_path):
    page = EXPECTED[name]
    world = World.build(tmp_path)
    people = {role: person(role) for role in ROLES}

    # Anonymous: public pages answer; the rest send to the login page and change nothing.
    before = AuditEvent.objects.count()
    with transaction.atomic():
        url = reverse(f"ui:{name}", kwargs=world.url_kwargs(page.args, None))
        response = call(Client(), page.method, url, query_for(name, world))
        transaction.set_rollback(True)
    if page.scope == PUBLIC:
        assert response.status_code in (200, 302), (name, response.status_code)
    else:
        assert response.status_code == 302, (name, response.status_code)
        assert response["Location"].startswith(reverse("ui:login")), response["Location"]
    assert AuditEvent.objects.count() == before

    for role, user in people.items():
        client = Client()
        client.force_login(user)
        allowed = page.scope in (PUBLIC, ANY) or page.scope in ROLE_GRANTS[role]
        with transaction.atomic():
            url = reverse(f"ui:{name}", kwargs=world.url_kwargs(page.args, user))
            before = AuditEvent.objects.count()
            response = call(client, page.method, url, query_for(name, world))
            written = AuditEvent.objects.count() - before
            transaction.set_rollback(True)
        label = f"{name} as {role or 'a person with no role'}"
        if allowed:
            assert response.status_code != 403, (label, response.content[:300])
            sent_to_login = response.status_code == 302 and response["Location"].startswith(reverse("ui:login") + "?")
            assert not sent_to_login, label
            if page.method == "get" and name not in ("login",):
                assert response.status_code == 200, (label, response.status_code, response.content[:300])
        else:
            assert response.status_code == 403, (label, response.status_code)
            assert f"does not allow '{page.scope}'" in html.unescape(response.content.decode()), label
            assert written == 0, label
