"""Feed the demo's held-out digits (brightened by --shift) through Triton, log the predictions
as an application calling Triton directly would, and run the drift pass over them at once.

    manage.py demo_drift --shift 0    # the model's own kind of data: no drift
    manage.py demo_drift              # brighter digits (+6 of 16): PSI far above 0.2, an alert

The drift page of the version (and the alert, with its email) shows the result.
"""

from datetime import timedelta

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from modelhub.alerts.models import Alert, AlertState
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.demo.data import load_eval_split
from modelhub.monitoring.drift_tasks import run_drift
from modelhub.monitoring.sampling import write_prediction_logs
from modelhub.registry.models import Alias
from modelhub.serving.models import Deployment, ObservedState, triton_model_name
from modelhub.serving.triton_client import TritonClient

from .load_demo import MODEL_NAME

BATCH = 64


class Command(BaseCommand):
    help = "Send the demo's held-out digits, brightened by --shift, through Triton and run the drift pass on them."

    def add_arguments(self, parser):
        parser.add_argument("--shift", type=float, default=6.0, help="added to every pixel (0-16), 0 = unchanged")
        parser.add_argument("--alias", default="production", help="the version behind this alias is fed")

    def handle(self, *args, **opts):
        alias = Alias.objects.filter(model__name=MODEL_NAME, name=opts["alias"]).select_related("version").first()
        if alias is None or alias.version is None:
            raise CommandError(f"{MODEL_NAME}@{opts['alias']} does not exist: run `manage.py load_demo` first")
        version = alias.version
        deployment = (
            Deployment.objects.filter(version=version, observed=ObservedState.LOADED, server__enabled=True)
            .select_related("server")
            .first()
        )
        if deployment is None:
            raise CommandError(f"{version} is not loaded on any server: deploy it first")

        features, _ = load_eval_split()
        shifted = np.clip(features + opts["shift"], 0, 16).astype(np.float32)
        started = timezone.now()
        records = self._predict(deployment.server, version, shifted, started)
        write_prediction_logs(version, records, Actor(source=Source.CLI))
        # The hourly pass would see these samples too; running it now over a window of
        # its own shows the result at once (each window is recorded once).
        results = run_drift(started - timedelta(seconds=1), timezone.now() + timedelta(seconds=1))
        result = next((r for r in results if r.version_id == version.pk), None)
        if result is None:
            raise CommandError(f"no drift result for {version}: does it have an evaluation set (its reference)?")
        drifted, js = result.details["drifted"], result.details["js_outputs"]
        self.stdout.write(
            f"{version}: {len(records)} digits brightened by {opts['shift']:g}: PSI max {result.value:.3f} "
            f"({len(drifted)} of {len(result.details['psi'])} features drifted), "
            f"JS of the outputs {'-' if js is None else f'{js:.3f}'}: {result.status}"
        )
        for alert in Alert.objects.filter(version=version, state=AlertState.FIRING).select_related("rule"):
            self.stdout.write(f"alert firing: {alert.rule.name} ({alert.last_message})")

    def _predict(self, server, version, inputs: np.ndarray, now) -> list[dict]:
        client = TritonClient.for_server(server)
        name = triton_model_name(MODEL_NAME, version.number)
        records = []
        try:
            for first in range(0, len(inputs), BATCH):
                batch = inputs[first : first + BATCH]
                result = client.infer(name, version.number, {"input": batch}, {"input": "FP32"})
                for row in range(len(batch)):
                    records.append(
                        {
                            "request_id": f"demo-drift-{now.timestamp():.0f}-{first + row}",
                            "time": now,
                            "inputs": {"input": batch[row]},
                            "outputs": {output: values[row] for output, values in result.items()},
                        }
                    )
        finally:
            client.close()
        return records
