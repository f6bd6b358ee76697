"""Fixtures of the UI tests: one signed-in client per role."""

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

ROLES = ("viewer", "operator", "admin")


@pytest.fixture
def make_person(db):
    """make_person("ann", "operator") -> a User in that role group (None: no role)."""

    def make(username: str, role: str | None = None, **extra) -> User:
        user = User.objects.create_user(username, password="pw-" + username, **extra)
        if role:
            # get_or_create: a transactional test's flush removes the groups the roles migration made.
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    return make


@pytest.fixture
def client_as(make_person):
    """client_as("viewer") -> a Django test client signed in as a fresh person in that role."""
    made = {}

    def sign_in(role: str | None) -> Client:
        key = role or "nobody"
        if key not in made:
            person = make_person(f"{key}-person", role)
            client = Client()
            client.force_login(person)
            client.person = person
            made[key] = client
        return made[key]

    return sign_in
