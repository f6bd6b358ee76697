"""Races schemathesis found through the API, pinned down deterministically enough to stay fixed."""

import threading
import time

import pytest
from django.db import connection, transaction

from modelhub.audit.actors import Actor
from modelhub.registry.models import Alias, Model
from modelhub.registry.services import move_alias


@pytest.mark.django_db(transaction=True)
def test_an_alias_move_cannot_deadlock_with_a_model_delete(registered):
    """delete_model locks the model row, then deletes the model's aliases. An alias move
    that locked its alias row before the model row made a lock cycle: Postgres killed
    one side with a deadlock error, which the API answered with a 500."""
    model = registered("digits", versions=2)
    move_alias(model, "production", model.versions.get(number=1), Actor())
    model_locked, errors = threading.Event(), []

    def delete_like_delete_model():
        try:
            with transaction.atomic():
                Model.objects.select_for_update().get(pk=model.pk)
                model_locked.set()
                time.sleep(0.5)  # the alias move starts meanwhile and must wait behind us
                Alias.objects.filter(model=model).delete()
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    def move():
        model_locked.wait()
        try:
            move_alias(model, "production", model.versions.get(number=2), Actor())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=delete_like_delete_model), threading.Thread(target=move)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert Alias.objects.get(model=model, name="production").version.number == 2
