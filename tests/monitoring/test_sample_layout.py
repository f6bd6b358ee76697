"""Which outputs sampling reads as per-class scores: a fixed class count only."""

import numpy as np
import pytest

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.monitoring.sampling import Layout
from modelhub.registry.services import register_upload
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db


def version_with_output(tmp_path, name: str, dims: list[int]):
    manifest = dict(DOUBLER_MANIFEST, outputs=[{"name": "OUTPUT", "datatype": "FP32", "dims": dims}])
    artifact = make_zip(tmp_path / f"{name}.zip", {"1/model.py": doubler_source(2)})
    return register_upload(name, artifact, manifest, Actor(source=Source.CLI), create=True).version


def test_a_variable_length_output_is_values_not_class_scores(tmp_path):
    layout = Layout(version_with_output(tmp_path, "values", [-1]))
    assert layout.class_output is None
    assert layout.output_names == ["OUTPUT"]
    values = layout.output_values({"OUTPUT": np.array([[0.5, 9.0, 2.0]], np.float32)}, rows=1)
    assert values.tolist() == [[0.5]]  # the first value, not the arg-max position 1


def test_a_fixed_class_count_output_is_scores_with_the_predicted_class(tmp_path):
    layout = Layout(version_with_output(tmp_path, "scores", [3]))
    assert layout.class_output == 0
    assert layout.output_names == ["OUTPUT.class"]
    values = layout.output_values({"OUTPUT": np.array([[0.5, 9.0, 2.0]], np.float32)}, rows=1)
    assert values.tolist() == [[1.0]]
