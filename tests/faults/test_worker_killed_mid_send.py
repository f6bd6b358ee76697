"""A worker killed in the middle of sending an alert mail: the next worker sends it, once.

(A worker killed in the middle of a reconcile's load: tests/serving/test_worker.py, the
next worker records the interrupted load and does not repeat it before its back-off.)
"""

import asyncio
import threading
import time
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller

from modelhub.alerts.delivery import INTERRUPTED
from modelhub.alerts.models import Notification, NotificationStatus
from tests.alerts.conftest import down, rules, world  # noqa: F401 - fixtures
from tests.faults.processes import free_port, kill_family, only_schedule, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

SHARED_REDIS = "redis://127.0.0.1:6379/6"


class StallingMailServer:
    """A real SMTP server that holds the first message at RCPT (before it is accepted) until released."""

    def __init__(self):
        self.messages = []
        self.stalled = threading.Event()
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.stalled.is_set():
            self.stalled.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def mail_server():
    handler = StallingMailServer()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    handler.release.set()
    controller.stop()


def test_a_worker_killed_while_sending_an_alert_mail_leaves_it_to_the_next_worker_who_sends_it_once(
    world,  # noqa: F811
    rules,  # noqa: F811
    mail_server,
    processes,
    monkeypatch,
):
    import redis

    redis.Redis.from_url(SHARED_REDIS).flushdb()
    only_schedule("send-notifications", 1)
    # The flip is sent by the worker's schedule only, not by this process on commit.
    monkeypatch.setattr("modelhub.alerts.evaluation._send_soon", lambda: None)
    down(world)

    env = processes.env(
        broker=SHARED_REDIS,
        EMAIL_URL=f"smtp://127.0.0.1:{mail_server.port}",
        MODELHUB_BASE_URL="https://modelhub.example.com",
    )
    first = processes.worker(env, ["notify"], beat=True)
    wait_for(mail_server.stalled.is_set, 120, "the worker to start sending the mail", every=0.2)
    sending = Notification.objects.get()
    assert (sending.status, sending.recipient) == (NotificationStatus.SENDING, "owner@example.com")

    kill_family(first)  # SIGKILL mid-send, as the out-of-memory killer or a node's loss would
    mail_server.release.set()
    assert mail_server.messages == []  # the mail server never accepted it

    processes.worker(env, ["notify"], beat=True)
    wait_for(lambda: mail_server.messages, 120, "the next worker to send the interrupted mail", every=0.2)
    time.sleep(3)  # several more scheduled runs (every second): nothing is sent again
    assert len(mail_server.messages) == 1
    assert mail_server.messages[0]["To"] == "owner@example.com"
    attempts = list(Notification.objects.order_by("attempt").values_list("attempt", "status", "error"))
    assert attempts == [
        (1, NotificationStatus.FAILED, INTERRUPTED),
        (2, NotificationStatus.SENT, ""),
    ]


def test_a_mail_still_being_sent_by_a_live_worker_is_not_taken_for_an_interrupted_one(
    world,  # noqa: F811
    rules,  # noqa: F811
    monkeypatch,
):
    from django.db import connection
    from django.utils import timezone

    from modelhub.alerts.delivery import _sending, recover_interrupted
    from modelhub.alerts.models import Flip

    monkeypatch.setattr("modelhub.alerts.evaluation._send_soon", lambda: None)
    down(world)
    flip = Flip.objects.get()
    alive = Notification.objects.create(flip=flip, recipient="a@example.com", status=NotificationStatus.SENDING)
    dead = Notification.objects.create(flip=flip, recipient="b@example.com", status=NotificationStatus.SENDING)
    holding, done = threading.Event(), threading.Event()

    def live_sender() -> None:  # another connection, as another worker's would be
        try:
            with _sending(flip.pk, "A@example.com"):
                holding.set()
                done.wait(30)
        finally:
            connection.close()

    sender = threading.Thread(target=live_sender)
    sender.start()
    try:
        assert holding.wait(30)
        now = timezone.now()
        assert recover_interrupted(now) == 1
    finally:
        done.set()
        sender.join()
    alive.refresh_from_db()
    dead.refresh_from_db()
    assert alive.status == NotificationStatus.SENDING and alive.retry_at is None
    assert (dead.status, dead.error, dead.retry_at) == (NotificationStatus.FAILED, INTERRUPTED, now)
