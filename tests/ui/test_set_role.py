"""`manage.py set_role`: how an admin gives people their UI role from the command line."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from modelhub.access.roles import role_scopes

pytestmark = pytest.mark.django_db


def set_role(*args) -> str:
    out = io.StringIO()
    call_command("set_role", *args, stdout=out)
    return out.getvalue()


def test_a_new_person_gets_an_account_whose_printed_password_signs_in_with_that_role():
    out = set_role("ann", "operator", "--email", "ann@example.com")
    password = out.split("login: ann / ")[1].split()[0]
    user = User.objects.get(username="ann")
    assert user.email == "ann@example.com" and not user.is_staff
    assert role_scopes(user) == {"read", "deploy", "infer"}

    client = Client()
    response = client.post("/login/", {"username": "ann", "password": password})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_a_new_role_replaces_the_old_one_and_keeps_the_password():
    set_role("bob", "admin")
    password_hash = User.objects.get(username="bob").password
    out = set_role("bob", "viewer")
    bob = User.objects.get(username="bob")
    assert "login:" not in out  # an existing account's password is not changed or shown
    assert bob.password == password_hash
    assert sorted(bob.groups.values_list("name", flat=True)) == ["viewer"]
    assert role_scopes(bob) == {"read"}


def test_an_unknown_role_is_refused_and_names_the_roles():
    with pytest.raises(CommandError, match="unknown role 'root': use one of viewer, operator, admin"):
        set_role("eve", "root")
    assert not User.objects.filter(username="eve").exists()
