"""The README's demo: two digits versions registered, deployed and answering on real Triton."""

import pytest
import tritonclient.http as triton_http
from django.core.management import call_command

from modelhub.alerts.defaults import ensure_default_rules
from modelhub.monitoring.models import CheckResult
from modelhub.registry.models import Alias, Model
from modelhub.serving.models import Deployment, ObservedState, triton_model_name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]


@pytest.fixture
def demo_unloaded_after(triton):
    """The session's Triton is shared: the demo's models go when the test ends, or a later
    test registering its own "digits" would find the demo's digits__v1 served there."""
    yield
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    for number in (1, 2):
        client.unload_model(triton_model_name("digits", number))
    client.close()


def test_load_demo_deploys_two_versions_that_answer_with_their_accuracy(
    triton, capsys, settings, tmp_path, demo_unloaded_after
):
    settings.VAR_DIR = tmp_path
    # as scripts/run registers its local Triton: the model files go into its repository folder
    call_command(
        "register_server",
        name="local",
        url=triton.http_url,
        backends="python",
        model_repository=str(triton.repository),
    )
    call_command("load_demo", server="local", timeout=120)

    out = capsys.readouterr().out
    model = Model.objects.get(name="digits")
    assert model.versions.count() == 2
    assert set(Deployment.objects.values_list("observed", flat=True)) == {ObservedState.LOADED}
    accuracies = [float(line.split("accuracy ")[1].split()[0]) for line in out.splitlines() if "answers on" in line]
    assert len(accuracies) == 2 and all(a > 0.9 for a in accuracies), out
    assert dict(Alias.objects.values_list("name", "version__number")) == {"production": 1, "staging": 2}
    # The held-out images are the evaluation set: both versions' accuracy is there after the first pass.
    assert model.evaluation_set.rows == 450
    measured = dict(CheckResult.objects.filter(kind="accuracy").values_list("version__number", "value"))
    assert sorted(measured) == [1, 2] and [round(measured[n], 4) for n in (1, 2)] == accuracies, measured
    for number in (1, 2):  # each version its own Triton model, and folder
        assert {p.name for p in (triton.repository / f"digits__v{number}").iterdir()} >= {str(number)}

    call_command("load_demo", server="local", timeout=120)  # idempotent
    assert model.versions.count() == 2

    # The demo's drift: its own kind of digits show none; brightened ones drift and fire the rule.
    ensure_default_rules()  # the transactional test database was flushed of the migration's rows
    capsys.readouterr()
    call_command("demo_drift", shift=0)
    unchanged = capsys.readouterr().out
    assert ": ok" in unchanged and "alert firing" not in unchanged, unchanged
    call_command("demo_drift", shift=6)
    shifted = capsys.readouterr().out
    assert ": fail" in shifted and "alert firing: Input drift: PSI above 0.2" in shifted, shifted
    psi = [float(out.split("PSI max ")[1].split()[0]) for out in (unchanged, shifted)]
    assert psi[0] < 0.2 < psi[1], psi
