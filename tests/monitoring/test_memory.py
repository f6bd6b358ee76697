"""Memory around loads: sampled before and after each real load and unload the reconciler makes."""

import pytest

from modelhub.monitoring.checks.memory import MIN_TRACKED_BYTES, gives_back, memory_change, sample
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.serving.models import Deployment
from modelhub.serving.services import request_undeploy
from tests.conftest import DOUBLER_MODEL_PY, make_zip
from tests.monitoring.test_checks import deploy
from tests.serving.test_deploy import register_server

MIB = 2**20
# A doubler that holds 1 GiB (written, so really resident) while it is loaded: more than
# the host's other processes (other test runs) change its used memory by in a few seconds.
HOG_MODEL_PY = (
    DOUBLER_MODEL_PY.format(factor=2)
    + """
    def initialize(self, args):
        self.hog = np.ones(2**30 // 8)
"""
)


def memory_results(**filters) -> list[CheckResult]:
    return list(CheckResult.objects.filter(kind=CheckKind.MEMORY, **filters).order_by("created_at", "id"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
def test_a_real_load_and_unload_are_measured_and_an_unload_that_keeps_memory_is_flagged(
    triton, actor, tmp_path, manifest, settings
):
    settings.MONITORING_MEMORY_SETTLE_S = 4.0  # Triton refreshes memory metrics every 2 s; a busy machine frees late
    server = register_server(triton, "memory-real")
    deployment = deploy(actor, make_zip(tmp_path / "hog.zip", {"1/model.py": HOG_MODEL_PY}), manifest, "hog", server)

    [load] = memory_results(server=server)
    assert load.version_id == deployment.version_id and load.status == Status.OK
    assert load.details["action"] == "load" and load.details["device"] == "cpu"  # no GPU here: host memory
    assert load.details["delta_bytes"] == load.value == load.details["after_bytes"] - load.details["before_bytes"]
    # The host is shared with other processes: only the order of magnitude is certain.
    assert load.value > 500 * MIB, load.details

    request_undeploy(deployment.version, [server], actor)

    [_, unload] = memory_results(server=server)
    assert unload.details["action"] == "unload" and unload.details["load_delta_bytes"] == load.value
    assert unload.value < -500 * MIB, unload.details
    assert unload.status == Status.OK, unload.message
    assert not Deployment.objects.filter(pk=deployment.pk, observed="loaded").exists()

    # An unload that gives back (about) nothing of what the load took is flagged.
    device, now = sample(server)
    kept = memory_change(server.pk, [deployment.version_id], "unload", device, now)
    assert kept.status == Status.WARN
    assert "'memory-real'" in kept.message and f"took {load.value / MIB:.0f} MiB" in kept.message


def test_small_loads_are_noise_and_large_ones_must_be_given_back(settings):
    settings.MONITORING_MEMORY_TOLERANCE = 0.2
    assert gives_back(MIN_TRACKED_BYTES - 1, 0)
    assert gives_back(500 * MIB, 400 * MIB)
    assert not gives_back(500 * MIB, 399 * MIB)
