"""Fixtures of the alert tests: a model with an owner, deployed on a server, rules, and a real SMTP server."""

import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth.models import User

from modelhub.alerts.models import AlertRule
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result, record
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, InferenceServer
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip


@dataclass
class World:
    server: InferenceServer
    deployment: Deployment
    owner: User

    @property
    def version(self):
        return self.deployment.version

    @property
    def model(self):
        return self.deployment.version.model


@pytest.fixture
def world(db, tmp_path) -> World:
    actor = Actor(source=Source.CLI)
    owner = User.objects.create_user("owner", email="owner@example.com")
    artifact = make_zip(tmp_path / "digits.zip", {"1/model.py": doubler_source(2)})
    version = register_upload("digits", artifact, DOUBLER_MANIFEST, actor, create=True).version
    version.model.owners.add(owner)
    version.model.latency_slo_ms = 50.0
    version.model.save()
    server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")
    deployment = Deployment.objects.create(version=version, server=server)
    return World(server, deployment, owner)


@pytest.fixture
def rules(db) -> dict[str, AlertRule]:
    """The default rules, written here: a transactional test's flush removes the migration's."""
    AlertRule.objects.all().delete()
    from modelhub.alerts.defaults import ensure_default_rules

    ensure_default_rules()
    return {rule.signal: rule for rule in AlertRule.objects.all()}


def server_health(world: World, up: bool, message: str = "", **extra) -> Result:
    return Result(
        kind=CheckKind.SERVER_HEALTH,
        status=Status.OK if up else Status.FAIL,
        server_id=world.server.pk,
        value=1.0 if up else 0.0,
        message=message,
        points=[("up", f"server:{world.server.pk}", 1.0 if up else 0.0)],
        **extra,
    )


def down(world: World, at=None, pass_id=None):
    message = f"server gpu-1 ({world.server.base_url}): live: connection refused"
    return record([server_health(world, False, message, time=at)], pass_id)


def up(world: World, at=None, pass_id=None):
    return record([server_health(world, True, time=at)], pass_id)


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [m["Subject"] for m in self.messages]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(settings):
    """A real SMTP server on a free loopback port; Django's email settings point at it."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    settings.MODELHUB_BASE_URL = "https://modelhub.example.com"
    settings.ALERT_EMAILS = []
    inbox.controller = controller
    yield inbox
    controller.stop()
