"""The admin follows the same roles as the API and the UI (modelhub.access.roles).

A staff account with every Django model permission still sees and changes only what
its role allows: a viewer reads, an operator also deploys and moves aliases, an admin
does everything. Django's own permissions can narrow that further, never widen it.
"""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.urls import reverse

from modelhub.api.models import ApiToken
from modelhub.registry.models import Alias
from modelhub.serving.models import Deployment, InferenceServer

pytestmark = pytest.mark.django_db


def staff(role: str | None) -> Client:
    """A staff member holding every Django permission, in `role`'s group."""
    user = User.objects.create_user(f"staff-{role}", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = Client()
    client.force_login(user)
    return client


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def server(db):
    return InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("role", "reads", "adds_server", "adds_alias", "sees_tokens"),
    [
        (None, False, False, False, False),
        ("viewer", True, False, False, False),
        ("operator", True, False, True, False),
        ("admin", True, True, True, True),
    ],
)
def test_each_role_gets_in_the_admin_what_it_gets_in_the_api(server, role, reads, adds_server, adds_alias, sees_tokens):
    client = staff(role)
    assert (client.get(admin_url(InferenceServer, "changelist")).status_code == 200) is reads
    assert (client.get(admin_url(InferenceServer, "change", server.pk)).status_code == 200) is reads
    assert (client.get(admin_url(InferenceServer, "add")).status_code == 200) is adds_server
    assert (client.get(admin_url(Alias, "add")).status_code == 200) is adds_alias
    assert (client.get(admin_url(ApiToken, "changelist")).status_code == 200) is sees_tokens
    index = client.get(reverse("admin:index")).content.decode()
    assert ("Inference servers" in index) is reads


def test_a_viewer_cannot_change_a_server_by_posting_its_form(server):
    response = staff("viewer").post(
        admin_url(InferenceServer, "change", server.pk), {"name": "gpu-1", "base_url": "http://evil.example:8000"}
    )
    assert response.status_code == 403
    server.refresh_from_db()
    assert server.base_url == "http://127.0.0.1:9"


def test_an_operator_may_not_run_a_servers_admin_only_change_but_may_reconcile(server):
    client = staff("operator")
    page = client.get(admin_url(InferenceServer, "changelist")).content.decode()
    assert "reconcile_now" in page  # the deploy-scoped action is offered
    assert client.post(admin_url(InferenceServer, "delete", server.pk), {"post": "yes"}).status_code == 403
    assert InferenceServer.objects.filter(pk=server.pk).exists()


def test_a_viewer_is_not_offered_the_alert_actions_that_need_deploy(server):
    from django.utils import timezone

    from modelhub.alerts.models import Alert, AlertRule

    rule = AlertRule.objects.create(name="down", signal="server_down", scope="server", server=server)
    Alert.objects.create(
        rule=rule, target=f"server:{server.pk}", target_label="gpu-1", state="firing", since=timezone.now()
    )

    viewer_page = staff("viewer").get(admin_url(Alert, "changelist")).content.decode()
    operator_page = staff("operator").get(admin_url(Alert, "changelist")).content.decode()
    assert "acknowledge_selected" not in viewer_page
    assert "acknowledge_selected" in operator_page


def test_deployments_are_the_operators_to_change_as_in_the_api(server):
    assert staff("operator").get(admin_url(Deployment, "add")).status_code == 200
    assert staff("viewer").get(admin_url(Deployment, "add")).status_code == 403
