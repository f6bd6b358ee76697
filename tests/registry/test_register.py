"""Registering versions: schema rules, archive checks, config.pbtxt, atomicity."""

import os

import pytest
from django.core.exceptions import ValidationError

from modelhub.audit.models import AuditEvent
from modelhub.registry.manifest import ManifestError
from modelhub.registry.models import ModelVersion, TensorSpec
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.registry.triton_config import build_model_config
from tests.conftest import doubler_source, make_tar_gz, make_zip

pytestmark = pytest.mark.django_db

CONFIG_PBTXT = """
name: "ignored-by-modelhub"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""


def stored_files(settings) -> list[str]:
    root = settings.MEDIA_ROOT
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


@pytest.fixture
def model(actor):
    return get_or_create_model("reg-test", actor)


def test_versions_are_numbered_per_model_and_record_provenance(model, actor, doubler_zip, manifest):
    first = register_version(model, doubler_zip(2, "a.zip"), manifest, actor)
    second = register_version(model, doubler_zip(3, "b.zip"), manifest, actor)
    other = register_version(get_or_create_model("other", actor), doubler_zip(3, "c.zip"), manifest, actor)

    assert (first.version.number, second.version.number, other.version.number) == (1, 2, 1)
    v = second.version
    assert v.git_commit == "0123abcd" and v.ci_run_url == "https://ci.example.com/runs/1"
    assert v.metadata == {"metrics": {"accuracy": 0.5}}
    assert len(v.sha256) == 64 and v.size > 0 and v.version_files == {"model.py": len(doubler_source(3))}
    assert [t.as_dict() for t in v.inputs] == [{"name": "INPUT", "datatype": "FP32", "dims": [-1], "labels": None}]
    assert AuditEvent.objects.filter(action="version.register", object_id=str(v.pk)).exists()


def test_same_bytes_for_same_model_return_the_existing_version(model, actor, doubler_zip, manifest):
    artifact = doubler_zip(2)
    first = register_version(model, artifact, manifest, actor)
    again = register_version(model, artifact, manifest, actor)

    assert first.created and not again.created
    assert again.version.pk == first.version.pk
    assert ModelVersion.objects.filter(model=model).count() == 1


def test_config_pbtxt_fills_the_schema_and_keeps_extra_config(model, actor, tmp_path):
    artifact = make_tar_gz(
        tmp_path / "m.tar.gz", {"m/config.pbtxt": CONFIG_PBTXT, "m/1/model.py": doubler_source(), "m/labels.txt": "a\n"}
    )
    version = register_version(model, artifact, {"provenance": {"git_commit": "abc"}}, actor).version

    assert version.backend == "python" and version.max_batch_size == 8
    assert [t.name for t in version.inputs] == ["INPUT"] and version.inputs[0].dims == [4]
    assert version.triton_config["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]
    assert version.triton_config["dynamic_batching"] == {"max_queue_delay_microseconds": "100"}
    assert version.model_files == {"labels.txt": 2}


def test_manifest_that_contradicts_config_pbtxt_is_refused_naming_the_field(model, actor, tmp_path, manifest, settings):
    artifact = make_zip(tmp_path / "m.zip", {"config.pbtxt": CONFIG_PBTXT, "1/model.py": doubler_source()})
    manifest["max_batch_size"] = 8
    manifest["inputs"][0]["datatype"] = "INT32"
    before = stored_files(settings)

    with pytest.raises(ManifestError) as err:
        register_version(model, artifact, manifest, actor)

    assert "manifest.inputs" in err.value.errors
    assert "'INPUT' datatype: registered 'INT32', found 'FP32'" in err.value.errors["manifest.inputs"]
    assert "manifest.outputs" in err.value.errors  # dims [-1] vs [4]
    assert ModelVersion.objects.count() == 0 and stored_files(settings) == before


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (lambda m: m["inputs"][0].update(datatype="FLOAT32"), "manifest.inputs[0].datatype", "unknown datatype"),
        (lambda m: m["outputs"][0].update(name=""), "manifest.outputs[0].name", "non-empty"),
        (lambda m: m["inputs"].append(dict(m["inputs"][0])), "manifest.inputs[1].name", "duplicate tensor name"),
        (lambda m: m["inputs"][0].update(dims=[0, 3]), "manifest.inputs[0].dims", "positive integers"),
        (lambda m: m.update(backend=""), "manifest.backend", "exactly one of backend"),
        (lambda m: m.update(config={"instance_group": [{"kind": "KIND_TPU"}]}), "manifest.config", "not a valid"),
        (lambda m: m.update(config={"input": []}), "manifest.config", "cannot be set"),
        (lambda m: m.update(colour="red"), "manifest.colour", "unknown field"),
        (lambda m: m["provenance"].update(ci_run_url="ftp://x"), "manifest.provenance.ci_run_url", "http"),
    ],
)
def test_bad_manifest_is_refused_naming_the_field_and_nothing_is_kept(
    model, actor, doubler_zip, manifest, settings, change, field, text
):
    change(manifest)
    before = stored_files(settings)
    with pytest.raises(ManifestError) as err:
        register_version(model, doubler_zip(), manifest, actor)
    assert field in err.value.errors and text in err.value.errors[field]
    assert ModelVersion.objects.count() == 0 and TensorSpec.objects.count() == 0
    assert stored_files(settings) == before


def test_broken_archive_is_refused_and_nothing_is_kept(model, actor, tmp_path, manifest, settings):
    good = make_zip(tmp_path / "good.zip", {"1/model.py": doubler_source() * 50})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    with pytest.raises(ManifestError) as err:
        register_version(model, truncated, manifest, actor)

    assert "artifact" in err.value.errors
    assert ModelVersion.objects.count() == 0 and stored_files(settings) == []


def test_a_failure_after_the_file_is_stored_removes_the_file(
    model, actor, doubler_zip, manifest, settings, monkeypatch
):
    def explode(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(TensorSpec.objects, "bulk_create", explode)
    with pytest.raises(RuntimeError):
        register_version(model, doubler_zip(), manifest, actor)
    assert ModelVersion.objects.count() == 0 and stored_files(settings) == []


def test_tensor_spec_validates_on_save(model, actor, doubler_zip, manifest):
    version = register_version(model, doubler_zip(), manifest, actor).version
    with pytest.raises(ValidationError) as err:
        TensorSpec(version=version, direction="input", name="X", datatype="FLOAT", dims=[1]).save()
    assert "datatype" in err.value.message_dict
    with pytest.raises(ValidationError) as err:
        TensorSpec(version=version, direction="input", name="INPUT", datatype="FP32", dims=[1]).save()
    assert "duplicate input name 'INPUT'" in str(err.value)


def test_generated_triton_config_carries_schema_labels_batching_and_versions():
    config = build_model_config(
        "digits",
        backend="python",
        platform="",
        max_batch_size=16,
        inputs=[{"name": "x", "datatype": "FP32", "dims": [64]}],
        outputs=[{"name": "p", "datatype": "FP32", "dims": [10], "labels": ["a", "b"]}],
        extra={"dynamic_batching": {}},
        versions=[2, 1],
    )
    assert config == {
        "dynamic_batching": {},
        "name": "digits",
        "backend": "python",
        "max_batch_size": 16,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [{"name": "p", "data_type": "TYPE_FP32", "dims": [10], "label_filename": "labels_p.txt"}],
        "version_policy": {"specific": {"versions": [1, 2]}},
    }
