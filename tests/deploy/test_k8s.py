"""docker/k8s, checked without a cluster: every manifest against Kubernetes' own schemas
(kubernetes-validate, strict), and the same images, commands, ports and probes as the
Compose file, the entrypoint and the settings."""

import re

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import K8S, compose, k8s_documents, k8s_objects, modelhub_services

KUBERNETES_VERSION = "1.30.0"  # the oldest release these manifests are meant for


def deployments() -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in k8s_objects("Deployment")}


def modelhub_pods() -> dict[str, dict]:
    """{workload name: pod spec} of every workload that runs ModelHub's image."""
    image = compose()["x-modelhub"]["image"]
    pods = {}
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "Job"):
            pod = obj["spec"]["template"]["spec"]
            if pod["containers"][0]["image"] == image:
                pods[obj["metadata"]["name"]] = pod
    return pods


@pytest.mark.parametrize("name", sorted(k8s_documents()))
def test_each_manifest_is_valid_kubernetes(name):
    for doc in k8s_documents()[name]:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_manifest():
    doc = deployments()["modelhub-web"]
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_applies_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(k8s_documents())
    assert kustomization["images"][0]["name"] == compose()["x-modelhub"]["image"].split(":")[0]


def test_each_compose_service_is_a_workload_with_the_same_image_and_command():
    services = {name: svc for name, svc in modelhub_services(compose()).items() if name != "register-triton"}
    pods = modelhub_pods()
    assert set(pods) == {f"modelhub-{name}" for name in services}
    for name, svc in services.items():
        container = pods[f"modelhub-{name}"]["containers"][0]
        assert container["args"] == svc["command"], name


def test_exactly_one_beat_never_two_during_a_rollout():
    beat = deployments()["modelhub-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    beats = [name for name, pod in modelhub_pods().items() if pod["containers"][0]["args"][0] == "beat"]
    assert beats == ["modelhub-beat"]


def test_web_and_gateway_probe_the_liveness_and_readiness_endpoints_on_their_service_ports():
    doc = compose()
    expected = {
        "web": ("/healthz/live", "/healthz/ready", int(doc["services"]["web"]["ports"][0].split(":")[1])),
        "gateway": ("/v2/health/live", "/v2/health/ready", int(doc["services"]["gateway"]["ports"][0].split(":")[1])),
    }
    services = {obj["metadata"]["name"]: obj for obj in k8s_objects("Service")}
    for name, (live, ready, port) in expected.items():
        container = deployments()[f"modelhub-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["livenessProbe"]["httpGet"]["path"] == live
        assert container["startupProbe"]["httpGet"]["path"] == live
        assert container["readinessProbe"]["httpGet"]["path"] == ready
        # and the health check in Compose asks the same liveness path
        assert live in " ".join(doc["services"][name]["healthcheck"]["test"])
        service = services[f"modelhub-{name}"]
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["selector"] == deployments()[f"modelhub-{name}"]["spec"]["selector"]["matchLabels"]
    # The web's probes name a host DJANGO_ALLOWED_HOSTS allows (a probe's own Host is the pod's IP).
    config = next(obj for obj in k8s_objects("ConfigMap") if obj["metadata"]["name"] == "modelhub-config")
    web = deployments()["modelhub-web"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        (host,) = [h["value"] for h in web[probe]["httpGet"]["httpHeaders"] if h["name"] == "Host"]
        assert host in config["data"]["DJANGO_ALLOWED_HOSTS"].split(",")


def test_every_pod_reads_the_config_and_the_secrets_and_runs_as_the_images_user():
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    uid = int(re.findall(r"^USER (\d+)", dockerfile, re.M)[-1])
    config = next(obj for obj in k8s_objects("ConfigMap") if obj["metadata"]["name"] == "modelhub-config")
    secret = next(obj for obj in k8s_objects("Secret") if obj["metadata"]["name"] == "modelhub-secrets")
    for name, pod in modelhub_pods().items():
        container = pod["containers"][0]
        assert container["envFrom"] == [{"configMapRef": {"name": "modelhub-config"}}], name
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/run/secrets/modelhub"]]["secret"]["secretName"] == "modelhub-secrets", name
        assert "/tmp" in mounts and "/var/lib/modelhub" in mounts, name  # writable, with a read-only root
    # Each X_FILE of the config names a key of the Secret, under its mount.
    files = {k: v for k, v in config["data"].items() if k.endswith("_FILE")}
    assert files
    for variable, path in files.items():
        assert path == f"/run/secrets/modelhub/{variable.removesuffix('_FILE')}"
        assert variable.removesuffix("_FILE") in secret["stringData"], variable
    # A secret given both ways is refused at start: none is also set in plain text.
    assert not {k.removesuffix("_FILE") for k in files} & set(config["data"])


def test_triton_is_nvidias_image_behind_a_headless_service_as_in_compose():
    triton_compose = compose()["services"]["triton"]
    triton = deployments()["triton"]
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == triton_compose["image"]
    assert container["command"] == triton_compose["command"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert triton["spec"]["replicas"] > 1
    (service,) = [obj for obj in k8s_objects("Service") if obj["metadata"]["name"] == "triton"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    register = compose()["services"]["register-triton"]["command"]
    assert f"--url=http://triton:{ports['http']}" in register
    assert f"--metrics-url=http://triton:{ports['metrics']}/metrics" in register
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_each_worker_exposes_its_own_metrics_port():
    config = next(obj for obj in k8s_objects("ConfigMap") if obj["metadata"]["name"] == "modelhub-config")
    port = int(config["data"]["MODELHUB_WORKER_METRICS_PORT"])
    workers = {name: pod for name, pod in modelhub_pods().items() if pod["containers"][0]["args"][0] == "worker"}
    assert len(workers) == 3
    for name, pod in workers.items():
        assert {"name": "metrics", "containerPort": port} in pod["containers"][0]["ports"], name
