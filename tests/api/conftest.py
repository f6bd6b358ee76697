"""Fixtures of the API tests: people with roles, tokens, clients, a server that never answers."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.registry.models import Model, ModelVersion, TensorSpec
from modelhub.serving.models import InferenceServer
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    """Each test stores artifacts and upload temp files in folders of its own, to inspect them."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "media").mkdir()
    (tmp_path / "upload-tmp").mkdir()
    return tmp_path


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture
def snapshot(isolated_storage):
    """What a refused upload must not change."""

    def take() -> dict:
        return {
            "stored": files_under(isolated_storage / "media"),
            "temporary": files_under(isolated_storage / "upload-tmp"),
            "models": sorted(Model.objects.values_list("name", flat=True)),
            "versions": ModelVersion.objects.count(),
            "tensors": TensorSpec.objects.count(),
        }

    return take


@pytest.fixture
def make_user(db):
    def make(username: str, role: str | None = None, **extra) -> User:
        user = User.objects.create_user(username, password="pw-" + username, **extra)
        if role:
            # get_or_create: a transactional test's flush removes the groups the roles migration made.
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    return make


@pytest.fixture
def ci_user(make_user):
    # An admin: a token does what its scopes say only as far as its user's role allows.
    return make_user("ci", "admin")


@pytest.fixture
def make_token(ci_user):
    """make_token("read", "upload", models=[...], expires_in=timedelta(...)) -> token text."""

    def make(*scopes: str, models=(), expires_in: timedelta | None = timedelta(days=1), name="ci", user=None):
        expires_at = timezone.now() + expires_in if expires_in is not None else None
        _, text = issue_token(
            name=name,
            user=user or ci_user,
            scopes=scopes,
            models=[Model.objects.get(name=m) if isinstance(m, str) else m for m in models],
            expires_at=expires_at,
            actor=Actor(source=Source.CLI),
        )
        return text

    return make


def bearer(text: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


@pytest.fixture
def client_with(make_token):
    """client_with("read", "deploy", models=[...]) -> an APIClient sending such a token."""

    def make(*scopes: str, **kwargs) -> APIClient:
        return bearer(make_token(*scopes, **kwargs))

    return make


@pytest.fixture
def admin_api(client_with):
    return client_with("admin")


@pytest.fixture
def session_client(make_user):
    """session_client("operator") -> an APIClient signed in as a person with that role."""

    def make(role: str | None, **extra) -> APIClient:
        user = make_user(f"person-{role or 'none'}-{len(extra)}", role, **extra)
        client = APIClient()
        client.force_login(user)
        return client

    return make


def upload(client: APIClient, model: str, artifact: Path | bytes, manifest: dict | str | None = None, **extra):
    data = {}
    if artifact is not None:
        if isinstance(artifact, bytes):
            from django.core.files.uploadedfile import SimpleUploadedFile

            data["artifact"] = SimpleUploadedFile("artifact.bin", artifact)
        else:
            data["artifact"] = open(artifact, "rb")  # noqa: SIM115 (closed below)
    if manifest is not None:
        data["manifest"] = manifest if isinstance(manifest, str) else json.dumps(manifest)
    try:
        return client.post(f"/api/v1/models/{model}/versions/", data, format="multipart", **extra)
    finally:
        if hasattr(data.get("artifact"), "close"):
            data["artifact"].close()


@pytest.fixture
def doubler_manifest():
    return json.loads(json.dumps(DOUBLER_MANIFEST))


@pytest.fixture
def doubler_artifact(tmp_path):
    def build(factor: int = 2, name: str | None = None) -> Path:
        return make_zip(tmp_path / (name or f"doubler-{factor}.zip"), {"1/model.py": doubler_source(factor)})

    return build


@pytest.fixture
def registered(admin_api, doubler_artifact, doubler_manifest):
    """registered("digits", versions=2) -> uploads that many doubler versions through the API."""

    def make(model: str = "digits", versions: int = 1) -> Model:
        for i in range(versions):
            response = upload(
                admin_api, model, doubler_artifact(factor=i + 2, name=f"{model}-{i}.zip"), doubler_manifest
            )
            assert response.status_code == 201, response.json()
        return Model.objects.get(name=model)

    return make


@pytest.fixture
def dead_server(db):
    """A registered server whose port nothing listens on: loads fail fast, naming it."""
    return InferenceServer.objects.create(name="dead", base_url="http://127.0.0.1:9", labels=["staging"])


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "code", "fields"}, body
    return body["error"]
