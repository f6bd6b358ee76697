"""Server discovery: a DNS name standing for several Triton servers becomes one server per
address; a gone address drains its server (deployments marked, never dropped); one that
comes back is re-enabled and gets its models back.

Most tests hand sync_group a resolver (a narrow seam: the answer DNS would give). The
resolver itself is tested against a real DNS server (dnslib, on a free loopback port)
and the system's resolver, and one test runs the whole story for real: a DNS server
whose answer changes, two real tritonservers on 127.0.0.2 and 127.0.0.3 sharing one
port (as pods behind a headless service), and the real reconciler.
"""

import socket
import time
from contextlib import closing

import pytest
from django.utils import timezone
from dnslib import AAAA, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from devtools.local_triton import LocalTriton, free_port
from modelhub.audit.models import AuditEvent, Source
from modelhub.monitoring.passes import run_pass
from modelhub.registry.services import InUse, get_or_create_model, register_version
from modelhub.serving.discovery import (
    ResolutionError,
    create_group,
    delete_group,
    due_groups,
    resolve,
    sync_group,
)
from modelhub.serving.discovery_tasks import discover_servers
from modelhub.serving.models import (
    Deployment,
    DeploymentTransition,
    DesiredState,
    InferenceServer,
    ObservedState,
    ServerGroup,
)
from modelhub.serving.reconciler import reconcile_server
from modelhub.serving.services import request_deploy, request_undeploy, servers_with_label
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip


class Answers:
    """A resolver handed to sync_group: the addresses DNS would give now."""

    def __init__(self, *addresses: str):
        self.addresses = list(addresses)
        self.asked: list[tuple[str, int]] = []

    def __call__(self, dns_name: str, port: int) -> list[str]:
        self.asked.append((dns_name, port))
        if isinstance(self.addresses, Exception):
            raise self.addresses
        return list(self.addresses)


def group(**fields) -> ServerGroup:
    values = {"name": "fleet", "dns_name": "triton.models.svc.cluster.local", "port": 9, "labels": ["gpu"]}
    return ServerGroup.objects.create(**{**values, **fields})


def version_of(name: str, tmp_path, actor, factor: int = 2):
    model = get_or_create_model(name, actor)
    artifact = make_zip(tmp_path / f"{name}-{factor}.zip", {"1/model.py": doubler_source(factor)})
    return register_version(model, artifact, DOUBLER_MANIFEST, actor).version


def system_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, source=Source.SYSTEM).order_by("id"))


# --- what a resolution does to the servers (a resolver handed in) --------------------------


@pytest.mark.django_db
def test_each_address_becomes_a_server_with_the_groups_labels_and_backends():
    fleet = group(backends=["python"], metrics_port=8002)
    answers = Answers("10.0.0.2", "10.0.0.1", "fd00::7")

    report = sync_group(fleet.pk, answers)

    assert answers.asked == [("triton.models.svc.cluster.local", 9)]
    assert report.added == ["fleet-10.0.0.2", "fleet-10.0.0.1", "fleet-fd00--7"]
    servers = {s.name: s for s in InferenceServer.objects.filter(group=fleet)}
    assert servers["fleet-10.0.0.1"].base_url == "http://10.0.0.1:9"
    assert servers["fleet-10.0.0.1"].metrics_url == "http://10.0.0.1:8002/metrics"
    assert servers["fleet-fd00--7"].base_url == "http://[fd00::7]:9"
    assert {s.address for s in servers.values()} == {"10.0.0.1", "10.0.0.2", "fd00::7"}
    assert all(s.labels == ["gpu"] and s.backends == ["python"] and s.enabled for s in servers.values())
    # Deploy by label reaches them.
    assert {s.name for s in servers_with_label("gpu")} == set(servers)
    assert [e.object_repr for e in system_events("inferenceserver.discover")] == report.added
    fleet.refresh_from_db()
    assert fleet.addresses == ["10.0.0.2", "10.0.0.1", "fd00::7"]
    assert fleet.last_resolved_at is not None and fleet.last_error == ""

    # Idempotent: the same answer changes nothing and records nothing.
    events = AuditEvent.objects.count()
    again = sync_group(fleet.pk, answers)
    assert (again.added, again.drained, again.rejoined) == ([], [], [])
    assert InferenceServer.objects.count() == 3
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_a_new_member_is_given_what_the_fleet_is_meant_to_serve(tmp_path, actor):
    fleet = group()
    sync_group(fleet.pk, Answers("10.0.0.1"))
    first = InferenceServer.objects.get(name="fleet-10.0.0.1")
    wanted, unwanted = version_of("digits", tmp_path, actor, 2), version_of("digits", tmp_path, actor, 3)
    request_deploy(wanted, [first], actor)
    request_deploy(unwanted, [first], actor)
    request_undeploy(unwanted, [first], actor)

    sync_group(fleet.pk, Answers("10.0.0.1", "10.0.0.2"))

    second = InferenceServer.objects.get(name="fleet-10.0.0.2")
    assert list(second.deployments.values_list("version__number", "desired")) == [(1, DesiredState.LOADED)]
    (deploy,) = system_events("deployment.deploy")
    assert deploy.details == {"reason": "joined group fleet"}
    assert deploy.model_name == "digits"


@pytest.mark.django_db
def test_a_gone_address_drains_its_server_and_marks_its_deployments_not_dropping_them(tmp_path, actor):
    fleet = group()
    sync_group(fleet.pk, Answers("10.0.0.1", "10.0.0.2"))
    gone = InferenceServer.objects.get(name="fleet-10.0.0.2")
    InferenceServer.objects.filter(pk=gone.pk).update(live=True, ready=True)
    loaded, settled = version_of("digits", tmp_path, actor, 2), version_of("digits", tmp_path, actor, 3)
    request_deploy(loaded, [gone], actor)
    Deployment.objects.filter(version=loaded).update(observed=ObservedState.LOADED)
    request_undeploy(settled, [gone], actor)
    Deployment.objects.filter(version=settled).update(observed=ObservedState.UNLOADED)

    report = sync_group(fleet.pk, Answers("10.0.0.1"))

    assert report.drained == ["fleet-10.0.0.2"]
    gone.refresh_from_db()
    assert gone.drained_at is not None and gone.live is False and gone.ready is False
    assert "its address 10.0.0.2 left triton.models.svc.cluster.local (group fleet)" in gone.last_error
    marked = Deployment.objects.get(version=loaded, server=gone)
    assert (marked.desired, marked.observed) == (DesiredState.LOADED, ObservedState.DRAINED)  # kept: it comes back
    assert "left triton.models.svc.cluster.local" in marked.last_error
    transition = DeploymentTransition.objects.get(deployment=marked, to_state=ObservedState.DRAINED)
    assert transition.from_state == ObservedState.LOADED and "10.0.0.2" in transition.error
    # A deployment already settled unloaded has nothing to say.
    assert Deployment.objects.get(version=settled, server=gone).observed == ObservedState.UNLOADED
    (drain,) = system_events("inferenceserver.drain")
    assert drain.details == {"group": "fleet", "address": "10.0.0.2", "deployments": 1}
    assert InferenceServer.objects.get(name="fleet-10.0.0.1").drained_at is None
    # Draining again is nothing new...
    assert sync_group(fleet.pk, Answers("10.0.0.1")).drained == []
    assert len(system_events("inferenceserver.drain")) == 1
    # ...but a reconcile that was running as it drained and wrote over the mark is put right.
    Deployment.objects.filter(pk=marked.pk).update(observed=ObservedState.FAILED)
    sync_group(fleet.pk, Answers("10.0.0.1"))
    assert Deployment.objects.get(pk=marked.pk).observed == ObservedState.DRAINED


@pytest.mark.django_db
def test_nothing_is_sent_to_a_drained_server_and_requests_made_meanwhile_read_drained(tmp_path, actor):
    # The drained server's address is a real listening socket: any call would be accepted there.
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        fleet = group(port=listener.getsockname()[1])
        sync_group(fleet.pk, Answers("127.0.0.1"))
        sync_group(fleet.pk, Answers())
        server = InferenceServer.objects.get(name="fleet-127.0.0.1")
        version = version_of("digits", tmp_path, actor)
        (deployment,) = request_deploy(version, servers_with_label("gpu"), actor)  # drained servers keep their label

        reconcile_server(server.pk)
        run_pass("health")
        run_pass("model_checks")

        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody called
    deployment.refresh_from_db()
    assert (deployment.desired, deployment.observed) == (DesiredState.LOADED, ObservedState.DRAINED)
    assert "is drained" in deployment.last_error
    server.refresh_from_db()
    assert server.last_checked_at is None


@pytest.mark.django_db
def test_an_address_that_comes_back_re_enables_its_server():
    fleet = group()
    sync_group(fleet.pk, Answers("10.0.0.1"))
    sync_group(fleet.pk, Answers())
    server = InferenceServer.objects.get(name="fleet-10.0.0.1")
    assert server.drained_at is not None

    report = sync_group(fleet.pk, Answers("10.0.0.1"))

    assert report.rejoined == ["fleet-10.0.0.1"] and report.added == []
    server.refresh_from_db()
    assert server.drained_at is None and server.last_error == ""
    assert InferenceServer.objects.count() == 1  # the same server, not a new one
    (rejoin,) = system_events("inferenceserver.rejoin")
    assert rejoin.details["address"] == "10.0.0.1"


@pytest.mark.django_db
def test_a_failed_resolution_drains_nothing_and_says_why():
    fleet = group()
    sync_group(fleet.pk, Answers("10.0.0.1"))
    answers = Answers()
    answers.addresses = ResolutionError("resolving 'triton.models.svc.cluster.local' failed: timed out")

    report = sync_group(fleet.pk, answers)

    assert report.error == "resolving 'triton.models.svc.cluster.local' failed: timed out"
    assert InferenceServer.objects.get().drained_at is None
    fleet.refresh_from_db()
    assert fleet.last_error == report.error and fleet.addresses == ["10.0.0.1"]


@pytest.mark.django_db
def test_a_server_name_taken_outside_the_group_is_reported_not_taken_over():
    InferenceServer.objects.create(name="fleet-10.0.0.1", base_url="http://elsewhere:8000")
    fleet = group()

    report = sync_group(fleet.pk, Answers("10.0.0.1", "10.0.0.2"))

    assert report.added == ["fleet-10.0.0.2"]
    assert "address 10.0.0.1 not added: a server named 'fleet-10.0.0.1' exists outside the group" in report.error
    assert InferenceServer.objects.get(name="fleet-10.0.0.1").base_url == "http://elsewhere:8000"
    fleet.refresh_from_db()
    assert "fleet-10.0.0.1" in fleet.last_error


@pytest.mark.django_db
def test_an_edit_of_the_group_reaches_its_servers(actor):
    fleet = create_group(actor, name="fleet", dns_name="triton.example", port=8000, labels=["gpu"])
    sync_group(fleet.pk, Answers("10.0.0.1"))
    ServerGroup.objects.filter(pk=fleet.pk).update(port=8100, labels=["gpu", "production"], metrics_port=8102)

    sync_group(fleet.pk, Answers("10.0.0.1"))

    server = InferenceServer.objects.get()
    assert (server.base_url, server.metrics_url) == ("http://10.0.0.1:8100", "http://10.0.0.1:8102/metrics")
    assert server.labels == ["gpu", "production"]
    (update,) = system_events("inferenceserver.update")
    assert update.details["fields"] == ["base_url", "labels", "metrics_url"]


@pytest.mark.django_db
def test_a_group_with_servers_is_not_deleted(actor):
    fleet = create_group(actor, name="fleet", dns_name="triton.example")
    sync_group(fleet.pk, Answers("10.0.0.1"))
    with pytest.raises(InUse, match="server group 'fleet' has servers: fleet-10.0.0.1"):
        delete_group(fleet, actor)
    assert ServerGroup.objects.filter(pk=fleet.pk).exists()


@pytest.mark.django_db
def test_a_group_is_due_after_its_own_interval():
    now = timezone.now()
    fresh = group(name="fresh", interval_s=60, last_resolved_at=now - timezone.timedelta(seconds=30))
    stale = group(name="stale", interval_s=60, last_resolved_at=now - timezone.timedelta(seconds=61))
    never = group(name="never")
    group(name="off", enabled=False)
    assert sorted(due_groups(now)) == sorted([stale.pk, never.pk])
    assert fresh.pk not in due_groups(now)


@pytest.mark.django_db
def test_the_scheduled_pass_goes_on_past_a_group_that_breaks(monkeypatch):
    broken = group(name="broken", dns_name="broken.example")
    group(name="fine", dns_name="fine.example")

    def resolver(dns_name, port):
        if dns_name == "broken.example":
            raise RuntimeError("a bug")
        return ["10.0.0.1"]

    monkeypatch.setattr("modelhub.serving.discovery.resolve", resolver)
    reports = discover_servers()

    assert [s.name for s in InferenceServer.objects.all()] == ["fine-10.0.0.1"]
    broken.refresh_from_db()
    assert broken.last_error == "discovery failed: RuntimeError: a bug" and broken.last_resolved_at is not None
    assert {"group_id": broken.pk, "error": broken.last_error} in reports
    assert due_groups() == []  # both wait for their interval


# --- the resolver: a real DNS server and the system's ---------------------------------------


class FleetZone(BaseResolver):
    """A DNS server's answers: name -> addresses, changed by the test as pods come and go."""

    def __init__(self):
        self.records: dict[str, list[str]] = {}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for address in self.records[name]:
            if request.q.qtype == QTYPE.A and ":" not in address:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=0))
            elif request.q.qtype == QTYPE.AAAA and ":" in address:
                reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=0))
        return reply


@pytest.fixture
def dns(settings):
    """A real DNS server on a free loopback port, which discovery is pointed at."""
    zone = FleetZone()
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda _: None))
    server.start_thread()
    settings.DISCOVERY_DNS_SERVER = ("127.0.0.1", server.server.server_address[1])
    settings.DISCOVERY_TIMEOUT_S = 1.0
    yield zone
    server.stop()
    server.server.server_close()


def test_the_resolver_reads_a_real_dns_servers_answer(dns):
    dns.records["triton.fleet.test"] = ["10.0.0.3", "10.0.0.1", "fd00::1", "10.0.0.1"]
    assert resolve("triton.fleet.test", 8000) == ["10.0.0.1", "10.0.0.3", "fd00::1"]
    dns.records["triton.fleet.test"] = []
    assert resolve("triton.fleet.test", 8000) == []  # a name with no address now: every server drains
    assert resolve("nothing.fleet.test", 8000) == []  # NXDOMAIN: the same


def test_a_dns_server_that_does_not_answer_is_an_error_not_an_empty_fleet(settings):
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as silent:
        silent.bind(("127.0.0.1", 0))
        settings.DISCOVERY_DNS_SERVER = ("127.0.0.1", silent.getsockname()[1])
        settings.DISCOVERY_TIMEOUT_S = 1.0
        started = time.monotonic()
        with pytest.raises(ResolutionError, match=r"resolving 'triton.fleet.test' at 127.0.0.1:\d+ failed"):
            resolve("triton.fleet.test", 8000)
    assert time.monotonic() - started < 5


def test_the_system_resolver_is_asked_without_a_dns_server_setting(settings):
    settings.DISCOVERY_DNS_SERVER = None
    assert "127.0.0.1" in resolve("localhost", 8000)
    assert resolve("no-such-name.invalid", 8000) == []


# --- the whole story, for real -----------------------------------------------------------------


def wait_for(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def observed(server_name: str) -> dict[int, str]:
    rows = Deployment.objects.filter(server__name=server_name).values_list("version__number", "observed")
    return dict(rows)


@pytest.mark.django_db(transaction=True)
def test_a_fleet_behind_a_real_dns_name_grows_drains_and_heals(dns, tmp_path, actor):
    port = free_port()
    pod_a = LocalTriton(tmp_path / "a", http_port=port, host="127.0.0.2").start(timeout=120)
    pod_b = LocalTriton(tmp_path / "b", http_port=port, host="127.0.0.3")
    try:
        dns.records["triton.fleet.test"] = ["127.0.0.2"]
        fleet = create_group(actor, name="fleet", dns_name="triton.fleet.test", port=port, labels=["fleet"])
        # Created: resolved at once (eager Celery runs the task as the write commits).
        assert [s.name for s in InferenceServer.objects.filter(group=fleet)] == ["fleet-127.0.0.2"]
        v1 = version_of("digits", tmp_path, actor, 2)
        request_deploy(v1, servers_with_label("fleet"), actor)
        assert observed("fleet-127.0.0.2") == {1: ObservedState.LOADED}

        # A second pod: a new server that loads what the fleet serves.
        pod_b.start(timeout=120)
        dns.records["triton.fleet.test"] = ["127.0.0.2", "127.0.0.3"]
        assert sync_group(fleet.pk).added == ["fleet-127.0.0.3"]
        assert observed("fleet-127.0.0.3") == {1: ObservedState.LOADED}

        # It goes away: drained, its deployment marked; a deploy meanwhile waits for it.
        pod_b.stop()
        dns.records["triton.fleet.test"] = ["127.0.0.2"]
        assert sync_group(fleet.pk).drained == ["fleet-127.0.0.3"]
        v2 = version_of("digits", tmp_path, actor, 3)
        request_deploy(v2, servers_with_label("fleet"), actor)
        assert observed("fleet-127.0.0.2") == {1: ObservedState.LOADED, 2: ObservedState.LOADED}
        assert observed("fleet-127.0.0.3") == {1: ObservedState.DRAINED, 2: ObservedState.DRAINED}

        # Back (a fresh Triton, nothing loaded): re-enabled, and given everything it should serve.
        pod_b.start(timeout=120)
        dns.records["triton.fleet.test"] = ["127.0.0.2", "127.0.0.3"]
        assert sync_group(fleet.pk).rejoined == ["fleet-127.0.0.3"]
        assert observed("fleet-127.0.0.3") == {1: ObservedState.LOADED, 2: ObservedState.LOADED}
        server = InferenceServer.objects.get(name="fleet-127.0.0.3")
        assert server.drained_at is None and server.live is True
        states = DeploymentTransition.objects.filter(deployment__server=server, deployment__version=v1)
        assert list(states.order_by("id").values_list("to_state", flat=True)) == [
            ObservedState.LOADED,
            ObservedState.DRAINED,
            ObservedState.LOADED,
        ]
    finally:
        pod_a.stop()
        pod_b.stop()
