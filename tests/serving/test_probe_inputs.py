"""Probe inputs generated from a schema, and the check of an answer against it."""

import numpy as np
import pytest
import tritonclient.http as triton_http

from modelhub.registry.datatypes import TRITON_DATATYPES
from modelhub.serving.models import InferenceServer, ObservedState
from modelhub.serving.probe_inputs import answer_differences, probe_inputs, probe_shape
from modelhub.serving.services import request_deploy
from tests.conftest import make_zip
from tests.serving.test_deploy import register


@pytest.mark.parametrize("datatype", TRITON_DATATYPES)
def test_every_datatype_gets_an_array_tritonclient_accepts(datatype):
    arrays, datatypes = probe_inputs([{"name": "x", "datatype": datatype, "dims": [-1, 3]}], max_batch_size=8, seed=1)

    assert datatypes == {"x": datatype}
    assert arrays["x"].shape == (1, 1, 3)
    tensor = triton_http.InferInput("x", list(arrays["x"].shape), datatype)
    tensor.set_data_from_numpy(arrays["x"], binary_data=True)  # raises on a dtype that does not fit


def test_shapes_follow_the_schema_as_served():
    assert probe_shape([-1], 0) == [1]
    assert probe_shape([4, -1], 0) == [4, 1]
    assert probe_shape([4, -1], 16) == [1, 4, 1]
    assert probe_shape([], 16) == [1, 1]  # one value per sample is served as dims [1]


def test_bytes_are_printable_text_and_integers_stay_small():
    arrays, _ = probe_inputs(
        [{"name": "s", "datatype": "BYTES", "dims": [5]}, {"name": "i", "datatype": "INT64", "dims": [100]}], 0
    )
    assert all(isinstance(v, bytes) and v.decode("ascii").isalnum() for v in arrays["s"].ravel())
    assert set(np.unique(arrays["i"])) <= {0, 1}


def test_answer_differences_name_each_output_and_what_differs():
    registered = [
        {"name": "label", "datatype": "INT64", "dims": []},
        {"name": "probs", "datatype": "FP32", "dims": [-1]},
        {"name": "gone", "datatype": "BYTES", "dims": [1]},
    ]
    answered = [
        {"name": "label", "datatype": "INT64", "dims": [1]},  # dims [] is served as [1]
        {"name": "probs", "datatype": "FP64", "dims": [3, 2]},
        {"name": "extra", "datatype": "FP32", "dims": [1]},
    ]
    assert answer_differences(registered, answered) == [
        "output 'gone' is missing from the answer",
        "output 'extra' is in the answer but not in the registered schema",
        "output 'probs' datatype: registered FP32, answered FP64",
        "output 'probs' dims: registered [-1], answered [3, 2]",
    ]
    assert answer_differences(registered[:2], [answered[0], {**answered[1], "datatype": "FP32", "dims": [7]}]) == []


# Echoes a BYTES, a BOOL and an FP16 input of a batching model, and says how many strings it got.
ECHO_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            flag = pb_utils.get_input_tensor_by_name(request, "FLAG").as_numpy()
            half = pb_utils.get_input_tensor_by_name(request, "HALF").as_numpy()
            count = np.array([[text.size]] * text.shape[0], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("TEXT_OUT", text),
                pb_utils.Tensor("FLAG_OUT", flag),
                pb_utils.Tensor("HALF_OUT", half.astype(np.float16)),
                pb_utils.Tensor("COUNT", count{count_suffix}),
            ]))
        return responses
"""

ECHO_MANIFEST = {
    "backend": "python",
    "max_batch_size": 4,
    "inputs": [
        {"name": "TEXT", "datatype": "BYTES", "dims": [-1]},
        {"name": "FLAG", "datatype": "BOOL", "dims": [2]},
        {"name": "HALF", "datatype": "FP16", "dims": [-1, 3]},
    ],
    "outputs": [
        {"name": "TEXT_OUT", "datatype": "BYTES", "dims": [-1]},
        {"name": "FLAG_OUT", "datatype": "BOOL", "dims": [2]},
        {"name": "HALF_OUT", "datatype": "FP16", "dims": [-1, 3]},
        {"name": "COUNT", "datatype": "INT32", "dims": [1]},
    ],
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
@pytest.mark.parametrize(
    "count_suffix, observed, difference",
    [
        ("", ObservedState.LOADED, ""),
        (".reshape(-1, 1, 1)", ObservedState.FAILED, "output 'COUNT' dims: registered [1], answered [1, 1]"),
    ],
)
def test_a_string_and_batching_model_passes_the_smoke_inference_only_with_the_registered_shapes(
    triton, actor, tmp_path, count_suffix, observed, difference
):
    import json

    server = InferenceServer.objects.create(name="probe-echo", base_url=triton.http_url)
    source = ECHO_MODEL_PY.format(count_suffix=count_suffix)
    model_name = f"probe-echo-{'ok' if not count_suffix else 'reshaped'}"
    version = register(
        actor,
        make_zip(tmp_path / "echo.zip", {"1/model.py": source}),
        json.loads(json.dumps(ECHO_MANIFEST)),
        model_name,
    )

    [deployment] = request_deploy(version, [server], actor)

    deployment.refresh_from_db()
    assert deployment.observed == observed, deployment.last_error
    assert difference in deployment.last_error
