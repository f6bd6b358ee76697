"""Signing in and out on ModelHub's own pages, for every person with a role, not only staff."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_signs_in_on_the_login_page_and_sees_its_name_and_role(make_person, role):
    make_person(f"{role}-1", role)
    client = Client()
    response = client.post("/login/", {"username": f"{role}-1", "password": f"pw-{role}-1"}, follow=True)
    assert response.redirect_chain == [("/", 302)]
    page = response.content.decode()
    assert f'{role}-1 <span class="role">{role}</span>' in page
    assert 'action="/admin/"' not in page and 'href="/admin/"' not in page  # not staff: no admin link


def test_a_wrong_password_says_so_and_signs_nobody_in(make_person):
    make_person("ann", "operator")
    client = Client()
    response = client.post("/login/", {"username": "ann", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert client.get("/")["Location"].startswith("/login/?next=/")


def test_an_inactive_person_cannot_sign_in(make_person):
    make_person("gone", "admin", is_active=False)
    response = Client().post("/login/", {"username": "gone", "password": "pw-gone"})
    assert response.status_code == 200 and "_auth_user_id" not in Client().session


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(make_person):
    make_person("ann", "viewer")
    asked = Client().get("/models/")
    assert asked.status_code == 302 and asked["Location"] == "/login/?next=/models/"
    back = Client().post("/login/?next=/models/", {"username": "ann", "password": "pw-ann", "next": "/models/"})
    assert back["Location"] == "/models/"
    away = Client().post("/login/", {"username": "ann", "password": "pw-ann", "next": "https://evil.example/"})
    assert away["Location"] == "/"


def test_sign_out_is_a_post_and_ends_the_session(client_as):
    client = client_as("operator")
    assert client.get("/logout/").status_code == 405  # a link or an image cannot sign anyone out
    assert client.get("/").status_code == 200
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/")["Location"].startswith("/login/")


def test_staff_see_the_admin_link_and_a_person_with_no_role_is_told_what_is_missing(make_person, client_as):
    staff = make_person("root", "admin", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert 'href="/admin/"' in client.get("/").content.decode()

    response = client_as(None).get("/")
    assert response.status_code == 403
    assert "your role does not allow &#x27;read&#x27;" in response.content.decode()
