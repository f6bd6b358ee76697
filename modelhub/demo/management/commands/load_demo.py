"""Register the digits demo (two versions), deploy both, point aliases, and
prove they answer: every held-out image goes through the real Triton."""

import time

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.demo.artifacts import build_demo_versions, write_evaluation_set
from modelhub.demo.data import load_eval_split
from modelhub.monitoring.accuracy_tasks import accuracy_pass
from modelhub.registry.evaluation import attach_evaluation_set
from modelhub.registry.models import EvaluationSet, TaskKind
from modelhub.registry.services import get_or_create_model, move_alias, register_version, sha256_of
from modelhub.serving.models import Deployment, InferenceServer, ObservedState, triton_model_name
from modelhub.serving.services import request_deploy
from modelhub.serving.triton_client import TritonClient

MODEL_NAME = "digits"


class Command(BaseCommand):
    help = "Load the demo: a digits classifier (ONNX in Triton's python backend), two versions, deployed."

    def add_arguments(self, parser):
        parser.add_argument("--server", default="local")
        parser.add_argument("--timeout", type=float, default=180)

    def handle(self, *args, **opts):
        actor = Actor(source=Source.CLI)
        server = InferenceServer.objects.filter(name=opts["server"]).first()
        if server is None:
            raise CommandError(f"no server named {opts['server']!r}: register it first (register_server)")
        model = get_or_create_model(
            MODEL_NAME,
            actor,
            description="Handwritten digits (scikit-learn's bundled 8x8 set), exported to ONNX",
            task_kind=TaskKind.CLASSIFICATION,
        )
        versions = []
        for demo in build_demo_versions(settings.VAR_DIR / "demo"):
            registration = register_version(model, demo.archive_path, demo.manifest, actor)
            versions.append(registration.version)
            state = "registered" if registration.created else "already registered"
            self.stdout.write(f"{state}: {registration.version} (held-out accuracy {demo.accuracy:.4f})")
        self._attach_evaluation_set(model, actor)
        for version in versions:
            request_deploy(version, [server], actor)
        move_alias(model, "production", versions[0], actor)
        move_alias(model, "staging", versions[-1], actor)
        self._wait_until_loaded(server, versions, opts["timeout"])
        self._check_answers(server, versions)
        # Not waiting for the schedule: the first accuracy pass runs now (on a worker's accuracy queue).
        accuracy_pass.delay()

    def _attach_evaluation_set(self, model, actor):
        # The held-out images: the accuracy check measures both versions on its first pass.
        path = write_evaluation_set(settings.VAR_DIR / "demo")
        current = EvaluationSet.objects.filter(model=model).first()
        if current is None or current.sha256 != sha256_of(path)[0]:
            current = attach_evaluation_set(
                model, path, actor, output="label", metric="accuracy", threshold=0.9, tolerance=0.01
            )
        self.stdout.write(f"evaluation set: {current.rows} held-out images, accuracy threshold {current.threshold}")

    def _wait_until_loaded(self, server, versions, timeout):
        deadline = time.monotonic() + timeout
        while True:
            states = {
                d.version.number: d
                for d in Deployment.objects.filter(server=server, version__in=versions).select_related("version")
            }
            if all(d.observed == ObservedState.LOADED for d in states.values()):
                return
            failed = [d for d in states.values() if d.observed == ObservedState.FAILED and d.last_error]
            if time.monotonic() > deadline:
                detail = "; ".join(f"v{d.version.number}: {d.last_error}" for d in failed) or "still pending"
                raise CommandError(f"demo versions not loaded on {server.name} after {timeout:g} s: {detail}")
            time.sleep(0.5)

    def _check_answers(self, server, versions):
        features, labels = load_eval_split()
        client = TritonClient.for_server(server)
        try:
            for version in versions:
                predicted = []
                name = triton_model_name(MODEL_NAME, version.number)  # straight to Triton, not through the gateway
                for start in range(0, len(features), 64):
                    batch = features[start : start + 64].astype(np.float32)
                    result = client.infer(name, version.number, {"input": batch}, {"input": "FP32"})
                    predicted.append(result["label"].reshape(-1))
                accuracy = float((np.concatenate(predicted) == labels).mean())
                self.stdout.write(
                    f"{version} answers on {server.name}: accuracy {accuracy:.4f} on {len(labels)} held-out images"
                )
        finally:
            client.close()
