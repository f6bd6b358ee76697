"""The filesystem broker of the default run delivers whole messages only, however busy."""

import contextlib
import os
import subprocess
import sys
import threading
from queue import Empty

import kombu
import pytest

from modelhub import filesystem_broker


@pytest.fixture
def channel(tmp_path):
    folder = tmp_path / "broker"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control")}
    with kombu.Connection(
        "filesystem://", transport="modelhub.filesystem_broker:Transport", transport_options=options
    ) as connection:
        yield connection.default_channel


def test_a_message_being_written_is_not_delivered_until_it_is_whole(channel, monkeypatch):
    rename = os.replace
    delivered_midway = []

    def replace_after_a_look(src, dst):
        # The moment kombu's own transport is exposed: the file exists, its content may not yet.
        with contextlib.suppress(Empty):
            delivered_midway.append(channel._get("checks"))
        rename(src, dst)

    monkeypatch.setattr(filesystem_broker.os, "replace", replace_after_a_look)
    channel._put("checks", {"body": "health_pass"})
    assert delivered_midway == []
    assert channel._get("checks") == {"body": "health_pass"}


def test_producers_and_a_consumer_at_once_lose_and_break_nothing(channel):
    sent_per_thread, threads = 300, 4

    def produce(n: int):
        for i in range(sent_per_thread):
            channel._put("checks", {"n": n, "i": i})

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for thread in producers:
        thread.start()
    received = []
    while any(t.is_alive() for t in producers) or len(received) < sent_per_thread * threads:
        try:
            received.append(channel._get("checks"))  # a half-written file would raise JSONDecodeError
        except Empty:
            if not any(t.is_alive() for t in producers):
                break
    assert len(received) == sent_per_thread * threads


def test_the_default_run_uses_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "DATABASE_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="modelhub.settings", MODELHUB_VAR_DIR=str(tmp_path))
    code = "from modelhub.celery import app; print(type(app.connection_for_write().transport).__module__)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "modelhub.filesystem_broker", result.stderr
