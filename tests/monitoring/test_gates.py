"""Gated promotion on a real Triton: a candidate moves an alias only past every gate,
and a refusal names the gate that failed, with its figures."""

import json

import pytest

from modelhub.audit.models import AuditEvent
from modelhub.monitoring.gates import FAILED, NOT_RUN, PASSED, GateFailed, evaluate_gates, promote_with_gates
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.evaluation import attach_evaluation_set
from modelhub.registry.models import Alias, AliasMove
from modelhub.registry.services import get_or_create_model, move_alias, register_version
from modelhub.serving.models import InferenceServer
from modelhub.serving.services import request_deploy
from modelhub.serving.triton_client import TritonClient
from tests.conftest import DOUBLER_MODEL_PY, make_zip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

# The doubler, slowed down: every request takes at least 40 ms.
SLOW_MODEL_PY = DOUBLER_MODEL_PY.replace(
    "    def execute(self, requests):\n",
    "    def execute(self, requests):\n        import time\n\n        time.sleep(0.04)\n",
)

BATCHED_MANIFEST = {
    "backend": "python",
    "max_batch_size": 8,
    "inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [1]}],
    "outputs": [{"name": "OUTPUT", "datatype": "FP32", "dims": [1]}],
}


@pytest.fixture
def server(triton):
    return InferenceServer.objects.create(name="gates", base_url=triton.http_url, metrics_url=triton.metrics_url)


@pytest.fixture
def version_of(actor, tmp_path, server):
    """version_of("gate-x", source, deploy=True) -> a new version of that model, loaded on the real Triton."""

    def make(model_name: str, source: str, *, deploy: bool = True):
        model = get_or_create_model(model_name, actor)
        artifact = make_zip(tmp_path / f"{model_name}-{model.last_version_number + 1}.zip", {"1/model.py": source})
        version = register_version(model, artifact, BATCHED_MANIFEST, actor).version
        if deploy:
            [deployment] = request_deploy(version, [server], actor)  # eager Celery: loaded on commit
            deployment.refresh_from_db()
            assert deployment.observed == "loaded", deployment.last_error
        return version

    return make


def doubler(factor: float, note: str = "") -> str:
    return DOUBLER_MODEL_PY.format(factor=factor) + f"\n# {note}\n"


def gates_of(report) -> dict[str, str]:
    return {gate.name: gate.status for gate in report.gates}


@pytest.mark.django_db  # no Triton call: the test's transaction will do
def test_a_candidate_that_is_not_loaded_fails_the_loaded_gate_and_the_others_do_not_run(version_of, actor):
    current = version_of("gate-unloaded", doubler(2), deploy=False)
    candidate = version_of("gate-unloaded", doubler(2, "v2"), deploy=False)
    move_alias(current.model, "production", current, actor)

    with pytest.raises(GateFailed) as refused:
        promote_with_gates(current.model, "production", candidate, actor)

    report = refused.value.report
    assert gates_of(report) == {"loaded": FAILED, "conforms": NOT_RUN, "latency": NOT_RUN, "accuracy": NOT_RUN}
    assert "gate 'loaded' failed" in str(refused.value)
    assert "gate-unloaded v2 is not loaded on any enabled server" in report.gates[0].message
    assert Alias.objects.get(model=current.model, name="production").version == current
    assert AliasMove.objects.filter(model=current.model).count() == 1  # the first move only


def test_a_candidate_slower_than_the_slo_is_refused_with_its_p95(version_of, actor):
    current = version_of("gate-slow", doubler(2), deploy=False)  # production need not be loaded to be compared with
    candidate = version_of("gate-slow", SLOW_MODEL_PY.format(factor=2))
    model = current.model
    model.latency_slo_ms = 20
    model.save()
    move_alias(model, "production", current, actor)

    with pytest.raises(GateFailed) as refused:
        promote_with_gates(model, "production", candidate, actor)

    report = refused.value.report
    assert gates_of(report) == {"loaded": PASSED, "conforms": PASSED, "latency": FAILED, "accuracy": PASSED}
    latency = report.gates[2]
    assert latency.figures["slo_ms"] == 20 and latency.figures["p95_ms"] >= 40
    assert "over gate-slow's SLO of 20 ms" in latency.message
    assert "gate 'latency' failed: p95" in str(refused.value)
    assert Alias.objects.get(model=model, name="production").version == current
    # The gates' checks are real results, recorded like a pass's.
    kinds = set(CheckResult.objects.filter(version=candidate).values_list("kind", flat=True))
    assert {CheckKind.MODEL_READY, CheckKind.SCHEMA, CheckKind.LATENCY} <= kinds
    assert CheckResult.objects.get(version=candidate, kind=CheckKind.LATENCY).status == "fail"


def test_a_candidate_that_passes_every_gate_moves_the_alias_and_the_audit_row_keeps_the_report(version_of, actor):
    current = version_of("gate-pass", doubler(2), deploy=False)
    candidate = version_of("gate-pass", doubler(2, "retrained"))
    model = current.model
    move_alias(model, "production", current, actor)

    alias, report = promote_with_gates(model, "production", candidate, actor)

    assert report.passed and alias.version == candidate
    assert gates_of(report) == dict.fromkeys(["loaded", "conforms", "latency", "accuracy"], PASSED)
    assert "has no latency SLO" in report.gates[2].message and report.gates[2].figures["p95_ms"] > 0
    assert "no evaluation set" in report.gates[3].message
    event = AuditEvent.objects.filter(action="alias.move", model_id=model.pk).latest("id")
    assert event.details["to_version"] == candidate.number
    assert event.details["gate"]["passed"] is True
    assert [g["name"] for g in event.details["gate"]["gates"]] == ["loaded", "conforms", "latency", "accuracy"]


def test_a_candidate_worse_than_production_beyond_the_tolerance_is_refused_and_one_within_passes(
    version_of, actor, tmp_path
):
    current = version_of("gate-accuracy", doubler(2))
    worse = version_of("gate-accuracy", doubler(3))  # answers 3x where 2x is expected
    close = version_of("gate-accuracy", doubler(2.001))
    model = current.model
    move_alias(model, "production", current, actor)
    rows = tmp_path / "eval.jsonl"
    rows.write_text("".join(json.dumps({"inputs": {"INPUT": [x]}, "expected": 2.0 * x}) + "\n" for x in range(1, 21)))
    attach_evaluation_set(model, rows, actor, output="OUTPUT", metric="mae", tolerance=0.05)

    with pytest.raises(GateFailed) as refused:
        promote_with_gates(model, "production", worse, actor)

    accuracy = refused.value.report.gates[3]
    assert accuracy.status == FAILED and refused.value.report.gates[2].status == PASSED
    # MAE: lower is better. Production (never measured before) was evaluated now: 0 off; the candidate 10.5 off.
    assert accuracy.figures["current"] == pytest.approx(0.0, abs=1e-6)
    assert accuracy.figures["candidate"] == pytest.approx(10.5, rel=1e-3)
    assert accuracy.figures["lower_is_better"] is True and accuracy.figures["limit"] == pytest.approx(0.05)
    assert "evaluated now" in accuracy.message and "at most 0.05 passes" in accuracy.message
    assert "gate 'accuracy' failed" in str(refused.value)
    assert Alias.objects.get(model=model, name="production").version == current
    assert CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=current).count() == 1

    alias, report = promote_with_gates(model, "production", close, actor)  # 0.0105 off: within the tolerance

    assert report.passed and alias.version == close
    assert "its latest result" in report.gates[3].message  # production's result of the first try, not run again
    assert CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=current).count() == 1


def test_a_candidate_unloaded_behind_modelhubs_back_fails_the_loaded_gate_with_tritons_reason(version_of, server):
    candidate = version_of("gate-gone", doubler(2))
    client = TritonClient.for_server(server)
    client.unload("gate-gone__v1")  # Triton forgets it; the deployment still reads "loaded"
    client.close()

    report = evaluate_gates(candidate.model, candidate, None)

    loaded = report.gates[0]
    assert loaded.status == FAILED and loaded.figures == {"servers_tried": ["gates"]}
    assert "gate-gone v1 is recorded as loaded but Triton does not serve it: gates:" in loaded.message
    assert CheckResult.objects.get(version=candidate, kind=CheckKind.MODEL_READY).status == "fail"
