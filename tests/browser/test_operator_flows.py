"""The issue's browser tests: an operator runs ModelHub from a real headless Chromium against
a live server and a real tritonserver: deploys a version and watches it load (or fail with
Triton's reason), reads a chart drawn from probe points, rolls an alias back, watches a killed
Triton's alert fire, acknowledges it and sees it resolve. A viewer sees no action forms, and a
POST forged from the viewer's page is refused by the server.

Checks run when the test calls their tasks, as beat would (eager Celery, as in
tests/test_monitoring_end_to_end.py); a deploy from the UI reconciles in the live server's
request thread on commit, so the deployment page reads its end state.
"""

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page, expect

from modelhub.alerts.models import Alert, AlertState
from modelhub.audit.models import AuditEvent
from modelhub.monitoring.models import Point
from modelhub.monitoring.sampling import write_samples
from modelhub.monitoring.tasks import health_pass, latency_pass, stats_pass
from modelhub.registry.models import Alias
from modelhub.registry.services import move_alias
from modelhub.serving.models import Deployment, InferenceServer, ObservedState
from modelhub.serving.services import request_deploy
from modelhub.serving.tasks import reconcile_server_task

# ruff: noqa: F811 (pytest fixtures imported by name)
from tests.alerts.conftest import rules  # noqa: F401
from tests.conftest import BROKEN_MODEL_PY, DOUBLER_MANIFEST, doubler_source, make_zip
from tests.serving.test_deploy import register, register_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

LOAD_TIMEOUT_MS = 30_000  # a python-backend load on a busy 2-core machine
UNREACHABLE_URL = "http://127.0.0.1:9"  # nothing listens on the discard port: a refused connection


def doubler(actor, tmp_path, model_name: str, factor: int = 2):
    """Register a doubler version (each factor gives new bytes, so a new version)."""
    artifact = make_zip(tmp_path / f"{model_name}-{factor}.zip", {"1/model.py": doubler_source(factor)})
    return register(actor, artifact, DOUBLER_MANIFEST, model_name)


def loaded(version, server, actor) -> Deployment:
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciled on commit
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    return deployment


def submit(form) -> None:
    """Press a form's submit button (the page's confirm dialog is accepted by the `page` fixture)."""
    form.locator("button[type=submit], input[type=submit]").first.click()


def action_form(page: Page, test_id: str):
    """The form an action's test id names: the form itself, or the one inside the element."""
    element = page.get_by_test_id(test_id)
    expect(element).to_have_count(1)
    is_form = element.evaluate("node => node.tagName === 'FORM'")
    return element if is_form else element.locator("form").first


def deploy_from_version_page(page: Page, server_name: str) -> None:
    """Choose the server in the version page's deploy form and press Deploy (the confirm is accepted)."""
    form = page.get_by_test_id("deploy-form")
    choice = form.locator("select[name=servers] option", has_text=server_name)
    form.locator("select[name=servers]").select_option(choice.get_attribute("value"))
    form.get_by_role("button", name="Deploy").click()


def expect_drawn_with_points(chart) -> None:
    """charts.js marks a drawn chart data-drawn="1" with the points the server sent; Plotly drew a trace."""
    expect(chart).to_have_attribute("data-drawn", "1")
    assert chart.get_attribute("data-error") is None, chart.get_attribute("data-error")
    assert int(chart.get_attribute("data-points")) > 0
    expect(chart.locator("svg.main-svg").first).to_be_visible()
    assert chart.locator(".scatterlayer .trace, .barlayer .trace").count() > 0


def server_row(page: Page, name: str):
    return page.get_by_test_id("overview-servers").locator("tr", has_text=name)


def ui_audit(action: str, **where) -> AuditEvent | None:
    return AuditEvent.objects.filter(source="ui", action=action, **where).first()


@pytest.mark.triton
def test_operator_sees_models_opens_a_version_deploys_it_and_watches_it_load(
    page, sign_in, confirmations, triton, actor, tmp_path
):
    server = register_server(triton, "brw-local")
    version = doubler(actor, tmp_path, "brw-deploy")
    doubler(actor, tmp_path, "brw-bystander")
    operator = sign_in("olga", "operator")

    page.goto(reverse("ui:model-list"))
    rows = page.get_by_test_id("model-row")
    expect(rows).to_have_count(2)
    row = rows.filter(has_text="brw-deploy")
    row.locator(f"a[href='{reverse('ui:model-detail', args=['brw-deploy'])}']").first.click()
    page.locator(f"a[href='{reverse('ui:version-detail', args=['brw-deploy', 1])}']").first.click()
    expect(page).to_have_url(re.compile(re.escape(reverse("ui:version-detail", args=["brw-deploy", 1])) + "$"))

    deploy_from_version_page(page, "brw-local")

    state = page.get_by_test_id("deployment-state")
    expect(state).to_have_attribute("data-state", "loaded", timeout=LOAD_TIMEOUT_MS)
    assert len(confirmations) == 1 and "brw-deploy v1" in confirmations[0], confirmations
    deployment = Deployment.objects.get(version=version, server=server)
    expect(page).to_have_url(re.compile(re.escape(reverse("ui:deployment-detail", args=[deployment.pk])) + "$"))
    expect(page.locator(".message.success")).to_contain_text("brw-deploy v1")
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    event = ui_audit("deployment.deploy", user=operator)
    assert event is not None and event.object_id == str(deployment.pk)

    page.goto(reverse("ui:audit-list"))  # who did what: the deploy, by the operator, from the UI
    row = page.locator(f"[data-testid=audit-row][data-event='{event.pk}']")
    for text in ("user:olga", "ui", "deployment.deploy", "brw-deploy"):
        expect(row).to_contain_text(text)


@pytest.mark.triton
def test_a_deploy_that_triton_refuses_ends_on_the_page_with_tritons_error(page, sign_in, triton, actor, tmp_path):
    server = register_server(triton, "brw-strict")
    artifact = make_zip(tmp_path / "broken.zip", {"1/model.py": BROKEN_MODEL_PY})
    version = register(actor, artifact, DOUBLER_MANIFEST, "brw-broken")
    sign_in("oskar", "operator")

    page.goto(reverse("ui:version-detail", args=["brw-broken", version.number]))
    deploy_from_version_page(page, "brw-strict")

    expect(page.get_by_test_id("deployment-state")).to_have_attribute("data-state", "failed", timeout=LOAD_TIMEOUT_MS)
    error = page.get_by_test_id("deployment-error")
    expect(error).to_contain_text("SyntaxError")  # Triton's own reason, not a bare "failed"
    expect(error).to_contain_text("brw-broken")
    assert Deployment.objects.get(version=version, server=server).observed == ObservedState.FAILED


@pytest.mark.triton
def test_the_deployment_page_shows_progress_and_updates_in_place_when_the_load_ends(
    page, sign_in, triton, actor, tmp_path
):
    server = register_server(triton, "brw-slow")
    version = doubler(actor, tmp_path, "brw-progress")
    # Wanted but not yet reconciled: what a deploy looks like while a worker is busy elsewhere.
    deployment = Deployment.objects.create(version=version, server=server)
    sign_in("pia", "viewer")
    page.goto(reverse("ui:deployment-detail", args=[deployment.pk]))
    expect(page.get_by_test_id("deployment-state")).to_have_attribute("data-state", "pending")
    expect(page.get_by_test_id("deployment-waiting")).to_contain_text("brw-slow")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    reconcile_server_task.delay(server.pk).get()  # the worker gets to it

    expect(page.get_by_test_id("deployment-state")).to_have_attribute("data-state", "loaded", timeout=LOAD_TIMEOUT_MS)
    expect(page.get_by_test_id("deployment-waiting")).to_have_count(0)
    assert page.evaluate("window.sameDocument") is True  # the poll swapped the status in


@pytest.mark.triton
def test_the_deployment_latency_chart_draws_the_probe_points(page, sign_in, triton, actor, tmp_path):
    deployment = loaded(doubler(actor, tmp_path, "brw-charted"), register_server(triton, "brw-charts"), actor)
    latency_pass.delay().get()  # the probe beat sends: p50/p95/p99 points for this deployment
    latency_points = Point.objects.filter(target=f"deployment:{deployment.pk}", metric__startswith="latency_")
    assert latency_points.exists()
    sign_in("vera", "viewer")  # reading charts needs no more than the read scope

    page.goto(reverse("ui:deployment-detail", args=[deployment.pk]))

    chart = page.get_by_test_id("chart-latency")
    expect_drawn_with_points(chart)

    # The range selector re-queries the server for the new window and draws again.
    with page.expect_response(lambda response: "/charts/latency" in response.url and "range=1h" in response.url):
        page.locator("figure[data-chart-block]", has=chart).get_by_role("button", name="1 h").click()
    expect(chart).to_have_attribute("data-range", "1h")
    expect_drawn_with_points(chart)


def test_operator_rolls_production_back_to_the_previous_version(page, sign_in, confirmations, actor, tmp_path):
    first = doubler(actor, tmp_path, "brw-rollback", factor=2)
    second = doubler(actor, tmp_path, "brw-rollback", factor=3)
    move_alias(first.model, "production", first, actor)
    move_alias(first.model, "production", second, actor)
    operator = sign_in("omar", "operator")

    page.goto(reverse("ui:model-detail", args=["brw-rollback"]))
    expect(page.get_by_test_id("alias-production").get_by_role("link", name="v2")).to_have_count(1)
    submit(action_form(page, "rollback-production"))

    expect(page.locator(".message.success")).to_contain_text("rolled back to v1")
    alias = page.get_by_test_id("alias-production")  # the page after the redirect
    expect(alias.get_by_role("link", name="v1")).to_have_count(1)
    expect(alias.get_by_role("link", name="v2")).to_have_count(0)
    assert len(confirmations) == 1, confirmations
    assert Alias.objects.get(model=first.model, name="production").version == first
    event = ui_audit("alias.move", user=operator)
    assert event is not None and (event.details["from_version"], event.details["to_version"]) == (2, 1)


@pytest.mark.triton
def test_a_killed_triton_fires_an_alert_the_operator_acknowledges_and_its_restart_resolves_it(
    page, sign_in, triton_factory, rules, actor, tmp_path
):
    own = triton_factory()
    server = register_server(own, "brw-crashy")
    loaded(doubler(actor, tmp_path, "brw-phoenix"), server, actor)
    operator = sign_in("oona", "operator")

    own.kill()
    health_pass.delay().get()  # the next pass, as beat sends it
    page.goto(reverse("ui:overview"))  # what is broken, at a glance
    expect(page.get_by_test_id("overview-alerts")).to_contain_text("brw-crashy")
    expect(server_row(page, "brw-crashy").locator("[data-state=down]")).to_have_count(1)
    page.get_by_role("navigation").get_by_role("link", name=re.compile(r"^Alerts")).click()

    firing = page.locator("[data-testid=alert-row][data-state=firing]")
    expect(firing).to_have_count(1)
    expect(firing).to_contain_text("brw-crashy")
    expect(page.get_by_test_id("nav-firing")).to_have_text("1")
    alert = Alert.objects.get(state=AlertState.FIRING)
    submit(action_form(page, f"ack-{alert.pk}"))

    expect(page.locator(".message.success")).to_be_visible()
    alert.refresh_from_db()
    assert alert.acknowledged_by == operator and alert.acknowledged_at is not None
    assert ui_audit("alert.acknowledge", user=operator) is not None

    own.restart()
    reconcile_server_task.delay(server.pk).get()  # what beat's reconcile-all does for this server
    health_pass.delay().get()
    page.goto(reverse("ui:overview"))
    expect(page.get_by_test_id("overview-alerts")).to_contain_text("Nothing firing")
    expect(server_row(page, "brw-crashy").locator("[data-state=up]")).to_have_count(1)
    page.goto(reverse("ui:alert-list"))  # firing alerts, by default

    expect(page.get_by_test_id("alert-row")).to_have_count(0)
    expect(page.get_by_test_id("nav-firing")).to_have_count(0)
    page.goto(reverse("ui:alert-list") + "?state=resolved")
    resolved = page.locator("[data-testid=alert-row][data-state=resolved]")
    expect(resolved).to_have_count(1)
    expect(resolved).to_contain_text("brw-crashy")


def test_a_viewer_sees_no_action_forms_and_a_forged_deploy_post_is_refused(
    page, context, browser, live_server, sign_in, rules, actor, tmp_path
):
    server = InferenceServer.objects.create(name="brw-down", base_url=UNREACHABLE_URL)
    version = doubler(actor, tmp_path, "brw-readonly")
    move_alias(version.model, "production", version, actor)
    health_pass.delay().get()  # the unreachable server: a firing alert an operator could act on
    assert Alert.objects.filter(state=AlertState.FIRING).exists()
    sign_in("vic", "viewer")
    pages = {
        "version": reverse("ui:version-detail", args=["brw-readonly", 1]),
        "model": reverse("ui:model-detail", args=["brw-readonly"]),
        "alerts": reverse("ui:alert-list"),
    }

    for name, url in pages.items():
        page.goto(url)
        assert page.locator("main h1, main h2").count() > 0, f"the {name} page did not render"
        expect(page.get_by_test_id("deploy-form"), f"{name} page").to_have_count(0)
        expect(page.locator("form[data-confirm]"), f"{name} page").to_have_count(0)
        expect(page.locator("main form[method=post i]"), f"{name} page").to_have_count(0)  # promote, silence…
    expect(page.get_by_test_id("alert-row")).to_have_count(1)  # the alert is there, its buttons are not

    # The same pages give an operator the forms (so the checks above look at the right things).
    operator_context = browser.new_context(base_url=live_server.url)
    try:
        operator_page = operator_context.new_page()
        sign_in("otto", "operator", on=operator_page)
        for name, url in pages.items():
            operator_page.goto(url)
            assert operator_page.locator("main form[method=post i]").count() > 0, f"{name} page"
        operator_page.goto(pages["version"])
        expect(operator_page.get_by_test_id("deploy-form")).to_have_count(1)
    finally:
        operator_context.close()

    page.goto(pages["version"])
    audit_before = AuditEvent.objects.count()
    [csrf] = [cookie["value"] for cookie in context.cookies() if cookie["name"] == "csrftoken"]
    forged = page.evaluate(
        """async ([url, server, token]) => {
            const response = await fetch(url, {
                method: "POST", credentials: "same-origin", redirect: "manual",
                headers: {"X-CSRFToken": token},
                body: new URLSearchParams({servers: server}),
            });
            return {status: response.status, body: await response.text()};
        }""",
        [reverse("ui:version-deploy", args=["brw-readonly", 1]), str(server.pk), csrf],
    )

    assert forged["status"] == 403, forged
    # Refused for the role, not for the token: the 403 page names the role that may deploy.
    assert 'data-testid="forbidden"' in forged["body"] and "does not allow" in forged["body"], forged["body"][:2000]
    assert not Deployment.objects.exists()
    assert AuditEvent.objects.count() == audit_before


def sampled(version, outputs: list[float]) -> None:
    """Sampled requests of a doubler version (JSON bodies, as the gateway hands them over)."""
    samples = []
    for i, value in enumerate(outputs):
        tensor = {"datatype": "FP32", "shape": [1], "data": [value]}
        samples.append(
            {
                "time": timezone.now(),
                "model": version.model.name,
                "version": version.number,
                "request_id": f"v{version.number}-{i}",
                "request_body": json.dumps({"inputs": [{"name": "INPUT", **tensor, "data": [value / 2]}]}).encode(),
                "binary_header_length": None,
                "response_body": json.dumps({"outputs": [{"name": "OUTPUT", **tensor}]}).encode(),
            }
        )
    write_samples(samples)


@pytest.mark.triton
def test_operator_starts_a_canary_watches_both_versions_side_by_side_and_promotes_it(
    page, sign_in, confirmations, triton, actor, tmp_path
):
    server = register_server(triton, "brw-canary")
    stable = doubler(actor, tmp_path, "brw-canary", factor=2)
    candidate = doubler(actor, tmp_path, "brw-canary", factor=3)
    for version in (stable, candidate):
        loaded(version, server, actor)
    move_alias(stable.model, "production", stable, actor)
    operator = sign_in("cora", "operator")

    # Start: v2 gets 30 % of production's traffic.
    page.goto(reverse("ui:model-detail", args=["brw-canary"]))
    start = action_form(page, "canary-start-production")
    start.locator("select[name=version]").select_option("2")
    start.locator("input[name=weight]").fill("30")
    submit(start)
    expect(page.locator(".message.success")).to_contain_text("canary v2 gets 30 %")

    # What beat would send meanwhile: Triton's statistics (read before and after the probes' requests),
    # latency probes of both deployments, sampled requests of both.
    stats_pass.delay().get()
    latency_pass.delay().get()
    stats_pass.delay().get()
    sampled(stable, [2.0, 4.0, 6.0, 8.0])
    sampled(candidate, [3.0, 6.0, 9.0])

    # Watch: the comparison shows both versions, in its table and overlaid in its charts.
    page.get_by_test_id("canary-watch-production").click()
    expect(page).to_have_url(re.compile(re.escape(reverse("ui:canary-compare", args=["brw-canary", "production"]))))
    expect(page.get_by_test_id("canary-compare-stable")).to_contain_text("v1 stable")
    expect(page.get_by_test_id("canary-compare-canary")).to_contain_text("v2 canary")
    expect(page.get_by_test_id("canary-latency-canary")).to_contain_text("mean of 1 probe")
    expect(page.get_by_test_id("canary-outputs-stable")).to_contain_text("of about 4 sampled requests")
    for name, kind in (("canary_latency", ".scatterlayer .trace"), ("canary_outputs", ".barlayer .trace")):
        chart = page.get_by_test_id(f"chart-{name}")
        expect_drawn_with_points(chart)
        expect(chart.locator(kind)).to_have_count(4 if name == "canary_latency" else 2)  # p50 and p95 of each
        expect(chart.locator(".legend")).to_contain_text("v1 (stable, 70 %)")
        expect(chart.locator(".legend")).to_contain_text("v2 (canary, 30 %)")
    expect(page.get_by_test_id("canary-traffic-canary")).to_contain_text("(0 % failed)")
    expect_drawn_with_points(page.get_by_test_id("chart-canary_traffic"))

    # Promote from the comparison: production moves to v2 with all the traffic.
    submit(action_form(page, "canary-promote-production"))

    expect(page.locator(".message.success")).to_contain_text("brw-canary@production promoted its canary")
    alias = page.get_by_test_id("alias-production")  # the model page, after the redirect
    expect(alias.get_by_role("link", name="v2")).to_have_count(1)
    expect(alias.get_by_test_id("canary-production")).to_have_text("no canary")
    assert [c.split(":")[0] for c in confirmations] == [
        "Start a canary on brw-canary@production (now v1)?",
        "Promote canary v2",
    ]
    production = Alias.objects.get(model=stable.model, name="production")
    assert (production.version, production.canary_version) == (candidate, None)
    assert ui_audit("alias.canary.promote", user=operator) is not None
