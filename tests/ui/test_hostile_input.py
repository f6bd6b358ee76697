"""No page answers 500 to what a browser, a script or a curious person may send.

Every GET page of the UI (from the URL resolver, through the permission matrix's table) is
asked with hostile query strings: unknown and repeated parameters, NUL bytes, huge
numbers, negative pages, malformed cursors and dates, every filter name the pages use.
Each must answer below 500 (a 400 naming the parameter is the right answer to nonsense).
Unknown names in the URL's path are 404s.
"""

import html
import re

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from tests.ui.test_page_permissions import EXPECTED, World, query_for

pytestmark = pytest.mark.django_db

# Parameters tried on every page, beside those the page itself offers (its GET forms'
# fields and its links' query strings).
ALWAYS = ("page", "before", "after", "cursor", "range", "start", "end", "target", "with", "next", "q")
VALUES = ("\x00", "-1", "99999999999999999999999", "nan", "2026-13-45T25:61", "<b>x</b>", "a" * 3000)


def offered_parameters(page: str) -> set[str]:
    """The names a page sends back: its GET forms' fields and its links' query parameters."""
    names = set()
    for form in re.findall(r"<form\b(.*?)</form>", page, flags=re.S):
        if 'method="post"' not in form.split(">", 1)[0].lower():
            names |= set(re.findall(r'name="([^"]+)"', form))
    for query in re.findall(r'href="[^"?]*\?([^"#]*)', page):
        names |= {part.split("=", 1)[0] for part in html.unescape(query).split("&") if part}
    return names - {"csrfmiddlewaretoken"}


def signed_in_admin() -> Client:
    user = User.objects.create_user("hostile-admin")
    user.groups.add(Group.objects.get_or_create(name="admin")[0])
    client = Client()
    client.force_login(user)
    return client


GET_PAGES = sorted(name for name, page in EXPECTED.items() if page.method == "get" and name not in ("login", "healthz"))


@pytest.mark.parametrize("name", GET_PAGES)
def test_no_query_string_makes_a_page_answer_500(name, tmp_path):
    world = World.build(tmp_path)
    client = signed_in_admin()
    url = reverse(f"ui:{name}", kwargs=world.url_kwargs(EXPECTED[name].args, None))
    base = query_for(name, world)
    first = client.get(url, base)
    offered = set() if first.streaming else offered_parameters(first.content.decode())  # a download has no forms
    fields = sorted(offered | set(ALWAYS))
    failures = []
    for field in fields:
        for value in VALUES:
            response = client.get(url, {**base, field: value})
            if response.status_code >= 500:
                failures.append(f"{field}={value[:40]!r}: {response.status_code}")
    response = client.get(url, [(f, v) for f in fields for v in ("1", "2")])  # every parameter twice
    if response.status_code >= 500:
        failures.append(f"repeated parameters: {response.status_code}")
    assert not failures, f"{name}: " + "; ".join(failures)


@pytest.mark.parametrize(
    "path",
    [
        "/models/no-such-model/",
        "/models/%00/",
        "/models/digits/versions/999999999999999999999/",
        "/models/digits/versions/99/compare/?with=1",
        "/servers/no-such-server/",
        "/servers/%00/",
        "/deployments/999999999999999999999/",
        "/alerts/999999999999999999999/",
        "/alerts/rules/999999999999999999999/",
        "/checks/999999999999999999999/",
        "/checks/schedules/999999999999999999999/",
        "/charts/no-such-chart?target=server:srv",
    ],
)
def test_unknown_names_and_ids_in_the_path_are_not_found(path, tmp_path):
    World.build(tmp_path)
    response = signed_in_admin().get(path)
    assert response.status_code in (400, 404), (path, response.status_code)


def test_a_nul_in_any_path_is_a_400_that_says_so_even_in_the_admin(admin_client):
    for path in ("/models/%00/", "/servers/%00/edit", "/admin/serving/inferenceserver/%00/change/"):
        response = admin_client.get(path)
        assert response.status_code == 400, path
        assert b"NUL" in response.content
    # The API keeps its own answer: no such name, in its error shape.
    assert admin_client.get("/api/v1/models/%00/").json()["error"]["code"] == "not_found"
