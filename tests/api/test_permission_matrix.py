"""Who may call what: every API endpoint x method, tried by every kind of caller.

The endpoints come from the URL resolver, not from a list kept by hand: an
endpoint or a method added without a line in EXPECTED fails
`test_every_endpoint_and_method_has_an_expectation`. Each line says which scope
the call needs and what a token restricted to some models may do with it; each
caller (anonymous, people by role, tokens by scope, restricted or not, and a
token whose user's role holds less) is then expected to get exactly that, the
403s saying why and restricted lists showing their models' rows only.

Writes run in a savepoint rolled back after each call, so every caller meets the
same world: models "digits" (the restricted tokens' model) and "faces", two
versions each, a production alias, an undeployed deployment on a server nothing
listens on (127.0.0.1:9), so no call reaches Triton.
"""

import io
import itertools
import json
import zipfile
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.evaluation import attach_evaluation_set
from modelhub.registry.models import Model
from modelhub.registry.services import move_alias, register_upload
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ServerGroup
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db

PUBLIC = "public"  # anyone, signed in or not
ANY = "any"  # anyone signed in

# What a token restricted to some models may do with an endpoint.
OWN = "own"  # the objects of its models; another model's answer 404, lists show its models' rows only
SHARED = "shared"  # everything: the rows belong to no model (servers, itself)
REFUSED = "refused"  # nothing: 403 naming its models


@dataclass(frozen=True)
class Rule:
    scope: str  # read / upload / deploy / admin, or PUBLIC / ANY
    restricted: str  # OWN / SHARED / REFUSED
    ok: int  # the status of an allowed call
    body: dict | None = None


ALERT_RULE_BODY = {
    "name": "slow digits",
    "signal": "latency_p95",
    "scope": "model",
    "model": "digits",
    "threshold": 100,
}
PREDICTION_RECORD = {"request_id": "r1", "inputs": {"INPUT": [1.0, 2.0]}, "outputs": {"OUTPUT": [2.0, 4.0]}}
EXPECTED: dict[tuple[str, str], Rule] = {
    ("api:model-list", "GET"): Rule("read", OWN, 200),
    ("api:model-list", "POST"): Rule("upload", REFUSED, 201, {"name": "new-model"}),
    ("api:model-detail", "GET"): Rule("read", OWN, 200),
    ("api:model-detail", "PUT"): Rule("upload", OWN, 200, {"description": "put", "task_kind": "other"}),
    ("api:model-detail", "PATCH"): Rule("upload", OWN, 200, {"description": "patched"}),
    ("api:model-detail", "DELETE"): Rule("admin", OWN, 204),
    ("api:version-list", "GET"): Rule("read", OWN, 200),
    ("api:version-list", "POST"): Rule("upload", OWN, 201),  # a multipart upload, built below
    ("api:version-detail", "GET"): Rule("read", OWN, 200),
    ("api:version-detail", "DELETE"): Rule("admin", OWN, 204),
    ("api:version-deploy", "POST"): Rule("deploy", OWN, 202, {"server": "dead"}),
    ("api:version-undeploy", "POST"): Rule("deploy", OWN, 202, {"server": "dead"}),
    ("api:evaluation-set", "GET"): Rule("read", OWN, 200),
    ("api:evaluation-set", "PUT"): Rule("upload", OWN, 200),  # a multipart upload, built below
    ("api:evaluation-set", "DELETE"): Rule("upload", OWN, 204),
    ("api:version-accuracy", "GET"): Rule("read", OWN, 200),
    # Allowed callers get past the permissions to "not loaded anywhere": nothing reaches Triton.
    ("api:version-accuracy", "POST"): Rule("upload", OWN, 409),
    ("api:version-predictions", "POST"): Rule("upload", OWN, 201, [PREDICTION_RECORD]),
    ("api:version-reference", "PUT"): Rule("upload", OWN, 201, [PREDICTION_RECORD]),
    ("api:model-labels", "POST"): Rule("upload", OWN, 201, [{"request_id": "r1", "label": "3"}]),
    ("api:alias-list", "GET"): Rule("read", OWN, 200),
    ("api:alias-detail", "GET"): Rule("read", OWN, 200),
    ("api:alias-detail", "PUT"): Rule("deploy", OWN, 200, {"version": 2}),
    ("api:alias-detail", "DELETE"): Rule("deploy", OWN, 204),
    ("api:alias-canary", "PUT"): Rule("deploy", OWN, 200, {"version": 2, "weight": 10}),
    # No canary runs in the world: allowed callers get past the permissions to "no canary running".
    ("api:alias-canary-promote", "POST"): Rule("deploy", OWN, 409),
    ("api:alias-canary-abort", "POST"): Rule("deploy", OWN, 409),
    ("api:alias-move-list", "GET"): Rule("read", OWN, 200),
    ("api:deployment-list", "GET"): Rule("read", OWN, 200),
    ("api:deployment-detail", "GET"): Rule("read", OWN, 200),
    ("api:deployment-transitions", "GET"): Rule("read", OWN, 200),
    # Run now: the world's deployment is undeployed, so an allowed call is told there is nothing to check.
    ("api:deployment-check", "POST"): Rule("deploy", OWN, 409),
    ("api:server-list", "GET"): Rule("read", SHARED, 200),
    ("api:server-list", "POST"): Rule("admin", REFUSED, 201, {"name": "new-server", "base_url": "http://127.0.0.1:9"}),
    ("api:server-detail", "GET"): Rule("read", SHARED, 200),
    ("api:server-detail", "PUT"): Rule("admin", REFUSED, 200, {"name": "dead", "base_url": "http://127.0.0.1:19"}),
    ("api:server-detail", "PATCH"): Rule("admin", REFUSED, 200, {"base_url": "http://127.0.0.1:19"}),
    ("api:server-detail", "DELETE"): Rule("admin", REFUSED, 204),
    ("api:server-check", "POST"): Rule("deploy", REFUSED, 200),
    # Server groups (DNS discovery) follow the servers' rules.
    ("api:server-group-list", "GET"): Rule("read", SHARED, 200),
    ("api:server-group-list", "POST"): Rule("admin", REFUSED, 201, {"name": "new-group", "dns_name": "new.example"}),
    ("api:server-group-detail", "GET"): Rule("read", SHARED, 200),
    ("api:server-group-detail", "PUT"): Rule("admin", REFUSED, 200, {"name": "fleet", "dns_name": "other.example"}),
    ("api:server-group-detail", "PATCH"): Rule("admin", REFUSED, 200, {"port": 9000}),
    ("api:server-group-detail", "DELETE"): Rule("admin", REFUSED, 204),
    ("api:audit-list", "GET"): Rule("read", OWN, 200),
    ("api:audit-detail", "GET"): Rule("read", OWN, 200),
    ("api:alert-list", "GET"): Rule("read", OWN, 200),
    ("api:alert-detail", "GET"): Rule("read", OWN, 200),
    ("api:alert-acknowledge", "POST"): Rule("deploy", OWN, 200),
    ("api:alert-silence", "POST"): Rule("deploy", OWN, 200, {"minutes": 30}),
    ("api:alert-unsilence", "POST"): Rule("deploy", OWN, 200),
    ("api:alert-rule-list", "GET"): Rule("read", OWN, 200),
    ("api:alert-rule-list", "POST"): Rule("deploy", OWN, 201, ALERT_RULE_BODY),
    ("api:alert-rule-detail", "GET"): Rule("read", OWN, 200),
    ("api:alert-rule-detail", "PUT"): Rule("deploy", OWN, 200, ALERT_RULE_BODY),
    ("api:alert-rule-detail", "PATCH"): Rule("deploy", OWN, 200, {"threshold": 200}),
    ("api:alert-rule-detail", "DELETE"): Rule("deploy", OWN, 204),
    ("api:check-result-list", "GET"): Rule("read", OWN, 200),
    ("api:check-result-detail", "GET"): Rule("read", OWN, 200),
    # Series name their target in the query (?target=deployment:<id>): the target's model counts.
    ("api:series", "GET"): Rule("read", OWN, 200),
    ("api:series-available", "GET"): Rule("read", OWN, 200),
    ("api:whoami", "GET"): Rule(ANY, SHARED, 200),
    ("api:schema", "GET"): Rule(PUBLIC, SHARED, 200),
    ("api:docs", "GET"): Rule(PUBLIC, SHARED, 200),
    ("api:redoc", "GET"): Rule(PUBLIC, SHARED, 200),
}
# HEAD and OPTIONS are answered by DRF from GET and the view's metadata, with the same checks.
DERIVED_METHODS = {"HEAD", "OPTIONS"}


# --- the endpoints, from the resolver ------------------------------------------------------


def _walk(patterns, prefix="", namespace=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _walk(pattern.url_patterns, route, ns)
        elif isinstance(pattern, URLPattern):
            yield route, f"{namespace}{pattern.name}" if pattern.name else None, pattern.callback


def _methods(callback) -> set[str]:
    if hasattr(callback, "actions"):  # a viewset route: the methods it maps to actions
        return {m.upper() for m in callback.actions}
    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view is None:  # a plain function view: every method reaches it
        return {"GET", "POST", "PUT", "PATCH", "DELETE"}
    return {m.upper() for m in view.http_method_names if hasattr(view, m)} - DERIVED_METHODS


def api_endpoints() -> list[tuple[str, str, str]]:
    """(route, url name, method) for every method of every URL under /api/."""
    found = []
    for route, name, callback in _walk(get_resolver().url_patterns):
        if route.lstrip("^").startswith("api/"):
            found += [(route, name, method) for method in sorted(_methods(callback))]
    return found


ENDPOINTS = api_endpoints()


def test_every_endpoint_and_method_has_an_expectation():
    missing = [f"{method} {route} ({name})" for route, name, method in ENDPOINTS if (name, method) not in EXPECTED]
    # The one exception: the catch-all that answers 404 for unknown /api/ URLs (tested below).
    missing = [m for m in missing if "(None)" not in m]
    assert not missing, "endpoints without a permission rule in EXPECTED:\n" + "\n".join(missing)
    unnamed = [route for route, name, _ in ENDPOINTS if name is None]
    assert unnamed == ["^api/"] * len(unnamed), unnamed


def test_unknown_api_urls_are_404_to_anyone():
    for method in ("get", "post", "put", "patch", "delete"):
        assert getattr(APIClient(), method)("/api/v1/nothing-here/").status_code == 404


# --- the callers ---------------------------------------------------------------------------

IMPLIES = {
    "read": {"read"},
    "upload": {"read", "upload"},
    "deploy": {"read", "deploy"},
    "infer": {"infer"},  # the inference gateway's scope: no REST endpoint takes it
    "admin": {"read", "upload", "deploy", "infer", "admin"},
}
ROLE_GRANTS = {None: set(), "viewer": {"read"}, "operator": {"read", "deploy", "infer"}, "admin": IMPLIES["admin"]}


@dataclass(frozen=True)
class Caller:
    label: str
    kind: str  # anonymous / session / token
    role: str | None  # of the person, or of the token's user
    scope: str | None = None  # a token's
    restricted: bool = False  # a token restricted to "digits"

    @property
    def grants(self) -> set[str]:
        if self.kind == "anonymous":
            return set()
        own = IMPLIES[self.scope] if self.kind == "token" else IMPLIES["admin"]
        return own & ROLE_GRANTS[self.role]


CALLERS = (
    [Caller("anonymous", "anonymous", None)]
    + [Caller(f"person:{role}", "session", role) for role in (None, "viewer", "operator", "admin")]
    + [Caller(f"token:{scope}", "token", "admin", scope) for scope in IMPLIES]
    + [Caller(f"token:{scope}:digits", "token", "admin", scope, restricted=True) for scope in IMPLIES]
    # A token of a user whose role holds less than the token: the role wins (test_auth tries every role).
    + [Caller("token:admin of a viewer", "token", "viewer", "admin")]
)
# Who calls the endpoints that need no scope: whom they let in does not depend on roles or scopes.
OPEN_CALLERS = [c for c in CALLERS if c.label in ("anonymous", "person:None", "token:read:digits")]


def _user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(caller: Caller, digits: Model) -> APIClient:
    client = APIClient()
    if caller.kind == "session":
        client.force_login(_user(f"person-{caller.role}", caller.role))
    elif caller.kind == "token":
        _, text = issue_token(
            name=caller.label,
            user=User.objects.filter(username=f"owner-{caller.role}").first()
            or _user(f"owner-{caller.role}", caller.role),
            scopes=[caller.scope],
            models=[digits] if caller.restricted else [],
            expires_at=None,
            actor=Actor(source=Source.CLI),
        )
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


# --- the world -------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    actor = Actor(source=Source.CLI)
    server = InferenceServer.objects.create(name="dead", base_url="http://127.0.0.1:9", labels=["staging"])
    ServerGroup.objects.create(name="fleet", dns_name="fleet.invalid")
    models = {}
    for name, factor in (("digits", 2), ("faces", 5)):
        for number in (1, 2):
            artifact = make_zip(tmp_path / f"{name}-{number}.zip", {"1/model.py": doubler_source(factor + number)})
            version = register_upload(name, artifact, DOUBLER_MANIFEST, actor, create=True).version
            if number == 1:
                move_alias(version.model, "production", version, actor)
                Deployment.objects.create(version=version, server=server, desired=DesiredState.UNLOADED)
        models[name] = version.model
        evaluation = tmp_path / f"{name}.jsonl"
        evaluation.write_bytes(EVALUATION_JSONL)
        attach_evaluation_set(version.model, evaluation, actor, output="OUTPUT", metric="mae")
    return models


def path_for(name: str, target: Model) -> str:
    """The URL of endpoint `name` for an object of model `target`."""
    route = next(route for route, n, _ in ENDPOINTS if n == name)
    kwargs = {}
    if name.startswith("api:alert"):  # both models' alerts exist, so a restricted list can show its own only
        for model in Model.objects.filter(name__in=["digits", "faces"]):
            _firing_alert(model)
    if name.startswith(("api:check-result", "api:series")):  # both models' results and a server's
        _check_results()
    if name.startswith("api:series"):
        query = f"?target=deployment:{Deployment.objects.get(version__model=target).pk}"
        return reverse(name) + query + ("&metric=latency_p95_ms" if name == "api:series" else "")
    if "<model_name>" in route:
        kwargs["model_name"] = target.name
    if "<number>" in route:
        # Version 2: no alias points at it, so deleting it is allowed.
        kwargs["number"] = 2
    if "<alias>" in route:
        kwargs["alias"] = "production"
    if "<name>" in route:
        kwargs["name"] = (
            target.name if name.startswith("api:model") else "fleet" if name.startswith("api:server-group") else "dead"
        )
    if "<pk>" in route:
        if name.startswith("api:audit"):
            kwargs["pk"] = AuditEvent.objects.filter(model_id=target.pk).earliest("id").pk
        elif name.startswith("api:check-result"):
            kwargs["pk"] = CheckResult.objects.filter(version__model=target).earliest("id").pk
        elif name.startswith("api:alert"):
            rule, alert = _firing_alert(target)
            kwargs["pk"] = rule.pk if name.startswith("api:alert-rule") else alert.pk
        else:
            kwargs["pk"] = Deployment.objects.get(version__model=target).pk
    return reverse(name, kwargs=kwargs)


def _check_results() -> None:
    """A readiness result of each model's deployment and a health result of the server (made on first use)."""
    if CheckResult.objects.exists():
        return
    for deployment in Deployment.objects.select_related("version"):
        CheckResult.objects.create(
            kind=CheckKind.MODEL_READY,
            status=Status.OK,
            server=deployment.server,
            deployment=deployment,
            version=deployment.version,
        )
    CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server=InferenceServer.objects.get())


def _firing_alert(target: Model):
    """A rule of `target` and its firing alert on the model's version 1 (made on first use)."""
    from django.utils import timezone

    from modelhub.alerts.models import Alert, AlertRule

    rule, _ = AlertRule.objects.get_or_create(
        name=f"{target.name} slow", scope="model", model=target, defaults={"signal": "latency_p95", "threshold": 10}
    )
    version = target.versions.get(number=1)
    alert, _ = Alert.objects.get_or_create(
        rule=rule,
        target=f"version:{version.pk}",
        defaults={
            "target_label": str(version),
            "version": version,
            "model": target,
            "state": "firing",
            "since": timezone.now(),
        },
    )
    return rule, alert


_uploads = itertools.count(100)


EVALUATION_JSONL = b'{"inputs": {"INPUT": [1.0, 2.0]}, "expected": [2.0, 4.0]}\n'


def call(client: APIClient, name: str, method: str, rule: Rule, path: str):
    if (name, method) == ("api:evaluation-set", "PUT"):
        data = {"file": SimpleUploadedFile("set.jsonl", EVALUATION_JSONL), "output": "OUTPUT", "metric": "mae"}
        return client.put(path, data, format="multipart")
    if (name, method) == ("api:version-list", "POST"):
        artifact = SimpleUploadedFile("a.zip", _zip_bytes(next(_uploads)))
        data = {"artifact": artifact, "manifest": json.dumps(DOUBLER_MANIFEST)}
        return client.post(path, data, format="multipart")
    return client.generic(method, path, json.dumps(rule.body) if rule.body is not None else "", "application/json")


def _zip_bytes(factor: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("1/model.py", doubler_source(factor))
    return buffer.getvalue()


def expected_status(caller: Caller, rule: Rule, own_target: bool, has_target: bool) -> int:
    if rule.scope == PUBLIC:
        return rule.ok
    if caller.kind == "anonymous":
        return 401
    if rule.scope != ANY and rule.scope not in caller.grants:
        return 403
    if caller.restricted:
        if rule.restricted == REFUSED:
            return 403
        if rule.restricted == OWN and has_target and not own_target:
            return 404
    return rule.ok


def why_refused(caller: Caller, rule: Rule) -> str:
    if caller.kind == "session":
        return f"your role does not allow {rule.scope!r}"
    if rule.scope in caller.grants or rule.scope == ANY:
        return "restricted to the models digits"
    if rule.scope in IMPLIES[caller.scope]:
        return f"has the {rule.scope!r} scope but its user"
    return f"lacks the {rule.scope!r} scope"


KNOWN = sorted({(name, method) for _, name, method in ENDPOINTS if (name, method) in EXPECTED})


@pytest.mark.parametrize("name, method", KNOWN, ids=[f"{m} {n}" for n, m in KNOWN])
def test_each_caller_gets_exactly_what_the_rule_says(world, name, method):
    rule = EXPECTED[(name, method)]
    digits, faces = world["digits"], world["faces"]
    route = next(route for route, n, _ in ENDPOINTS if n == name)
    has_target = "<" in route  # a list at the top (models, deployments, audit) has none
    wrong = []
    for caller in OPEN_CALLERS if rule.scope in (PUBLIC, ANY) else CALLERS:
        client = client_for(caller, digits)
        # Another model's object is tried by restricted tokens whose scope allows the call.
        reaches = caller.restricted and rule.restricted == OWN and has_target and rule.scope in caller.grants
        targets = [digits, faces] if reaches else [digits]
        for target in targets:
            path = path_for(name, target)
            with transaction.atomic():
                response = call(client, name, method, rule, path)
                transaction.set_rollback(True)  # the next caller meets the same world
            expected = expected_status(caller, rule, target == digits, has_target)
            filtered_list = caller.restricted and rule.restricted == OWN and not has_target and expected == 200
            problem = None
            if response.status_code != expected:
                problem = f"got {response.status_code}, expected {expected}: {response.content[:300]!r}"
            elif expected == 403 and why_refused(caller, rule) not in response.json()["error"]["message"]:
                problem = f"403 without saying why ({why_refused(caller, rule)!r}): {response.json()}"
            elif filtered_list and b"faces" in response.content:
                problem = "a restricted token's list shows another model's rows"
            elif filtered_list and b"digits" not in response.content:
                problem = "a restricted token's list misses its own model's rows"
            if problem:
                wrong.append(f"{caller.label} {method} {path}: {problem}")
    assert not wrong, "\n".join(wrong)
