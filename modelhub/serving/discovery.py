"""Server discovery: a DNS name that resolves to several Triton addresses (a Kubernetes
headless service) kept as one InferenceServer per address.

`sync_group` is the one writer of what discovery decides, idempotent, audited as the
system's actions:

- an address that appears becomes a server named "<group>-<address>" with the group's
  labels and backends (so a deploy by label reaches it), and it is given the versions
  the group's other servers are meant to serve (desired loaded): the reconciler then
  loads them, as it would on any server;
- an address that is gone drains its server: `drained_at` is set, it is no longer live,
  nothing is sent to it any more (no loads, unloads or checks against a host that is not
  there) and each of its deployments reads observed "drained", with the reason, in the
  API, the pages and its transitions. Its desired state stays as it was, and deploys by
  label go on writing it, so that
- an address that comes back re-enables its server, and the reconciler loads what its
  deployments want.

Resolution is `resolve`, the one function that asks DNS: the system resolver
(getaddrinfo) or, with MODELHUB_DISCOVERY_DNS_SERVER, that DNS server. A name that does
not exist or has no address (NXDOMAIN, no records) is an empty answer, so every server
drains; any other failure (a timeout, a server failure) changes nothing and is kept on
the group as its last error: a DNS outage must not drain a fleet.
"""

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from modelhub.audit.actors import SYSTEM, Actor
from modelhub.audit.log import record
from modelhub.registry.services import InUse, NameTaken
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState, ServerGroup
from modelhub.serving.transitions import observe
from modelhub.taskqueue import enqueue_on_commit

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]


class ResolutionError(Exception):
    """The name could not be resolved now (not: it has no address)."""


def resolve(dns_name: str, port: int) -> list[str]:
    """The addresses `dns_name` resolves to now, sorted, each once; [] when it has none.

    Raises ResolutionError, naming the name and what the resolver said, when the
    answer is unknown (timeout, server failure)."""
    if settings.DISCOVERY_DNS_SERVER is not None:
        found = _ask_dns_server(dns_name, *settings.DISCOVERY_DNS_SERVER)
    else:
        found = _ask_system_resolver(dns_name, port)
    return sorted(set(found), key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


# getaddrinfo's "this name has no address": the answer is known, and empty.
_NO_ADDRESS = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def _ask_system_resolver(dns_name: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(dns_name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _NO_ADDRESS:
            return []
        raise ResolutionError(f"resolving {dns_name!r} failed: {exc.strerror or exc}") from exc
    # A link-local IPv6 answer carries its scope ("fe80::1%eth0"): the address is the part before it.
    return [sockaddr[0].split("%")[0] for _family, _type, _proto, _name, sockaddr in answers]


def _ask_dns_server(dns_name: str, address: str, port: int) -> list[str]:
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address]
    resolver.port = port
    resolver.lifetime = settings.DISCOVERY_TIMEOUT_S
    found: list[str] = []
    for record_type in ("A", "AAAA"):
        try:
            answer = resolver.resolve(dns_name, record_type, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise ResolutionError(f"resolving {dns_name!r} at {address}:{port} failed: {exc}") from exc
        found += [rdata.address for rdata in answer]
    return found


@dataclass
class SyncReport:
    group: str
    addresses: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # server names
    drained: list[str] = field(default_factory=list)
    rejoined: list[str] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def server_name(group: ServerGroup, address: str) -> str:
    # Server names allow [a-z0-9_.-]: an IPv6 address's colons become dashes.
    return f"{group.name}-{address.replace(':', '-')}".lower()


def _host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def member_fields(group: ServerGroup, address: str) -> dict:
    """What a server of `group` at `address` is told by its group (kept in step at every sync)."""
    host = _host(address)
    return {
        "base_url": f"{group.scheme}://{host}:{group.port}",
        "metrics_url": f"http://{host}:{group.metrics_port}/metrics" if group.metrics_port else "",
        "labels": list(group.labels or []),
        "backends": list(group.backends or []),
    }


def sync_group(group_id: int, resolver: Resolver | None = None, actor: Actor = SYSTEM) -> SyncReport:
    """Resolve one group's name (with `resolve` unless a resolver is given) and bring its
    servers in line with the answer."""
    resolver = resolver or resolve
    group = ServerGroup.objects.get(pk=group_id)
    report = SyncReport(group.name)
    now = timezone.now()
    try:
        addresses = resolver(group.dns_name, group.port)
    except ResolutionError as exc:
        report.error = str(exc)
        ServerGroup.objects.filter(pk=group.pk).update(last_resolved_at=now, last_error=report.error)
        log.warning("discovery of group %s: %s", group.name, report.error)
        return report
    # One spelling per address (as the servers' address column stores it), each once, in the answer's order.
    addresses = list(dict.fromkeys(str(ipaddress.ip_address(a)) for a in addresses))
    report.addresses = addresses
    to_reconcile: list[int] = []
    with transaction.atomic():
        # The group's row lock: two runs for one group (beat's, and one a create or edit queued) take turns.
        group = ServerGroup.objects.select_for_update().get(pk=group.pk)
        members = {s.address: s for s in InferenceServer.objects.select_for_update().filter(group=group)}
        problems = []
        for address in addresses:
            server = members.get(address)
            if server is None:
                server, problem = _add_server(group, address, actor)
                if server is None:
                    problems.append(problem)
                    continue
                report.added.append(server.name)
                to_reconcile.append(server.pk)
            elif server.drained_at is not None:
                _rejoin(server, group, actor)
                report.rejoined.append(server.name)
                to_reconcile.append(server.pk)
            _keep_in_step(server, group, address, actor)
        for address, server in members.items():
            if address in addresses:
                continue
            if server.drained_at is None:
                _drain(server, group, actor, now)
                report.drained.append(server.name)
            else:
                # A reconcile that was running when it drained may have written over the mark.
                mark_drained(server, server.last_error)
        report.error = "; ".join(problems)
        ServerGroup.objects.filter(pk=group.pk).update(
            addresses=addresses, last_resolved_at=now, last_error=report.error
        )
        if to_reconcile:
            from modelhub.serving.tasks import reconcile_servers_task

            reconcile_servers_task.delay_on_commit(to_reconcile)
    if report.added or report.drained or report.rejoined:
        log.info(
            "group %s (%s): added %s, drained %s, rejoined %s",
            group.name,
            group.dns_name,
            report.added,
            report.drained,
            report.rejoined,
        )
    return report


def _add_server(group: ServerGroup, address: str, actor: Actor) -> tuple[InferenceServer | None, str]:
    name = server_name(group, address)
    if InferenceServer.objects.filter(name=name).exists():
        return None, f"address {address} not added: a server named {name!r} exists outside the group"
    server = InferenceServer(name=name, group=group, address=address, **member_fields(group, address))
    server.full_clean(validate_unique=False, validate_constraints=False)
    server.save()
    record(actor, "inferenceserver.discover", server, group=group.name, dns_name=group.dns_name, address=address)
    _inherit_fleet_deployments(server, group, actor)
    return server, ""


def _inherit_fleet_deployments(server: InferenceServer, group: ServerGroup, actor: Actor) -> None:
    """A new member serves what its fellow members are meant to serve: the group is one fleet."""
    wanted = (
        # Drained members too: deploys by label go on reaching them, and when pods are replaced
        # (new addresses) the old ones may have drained before the new ones appear.
        Deployment.objects.filter(server__group=group, desired=DesiredState.LOADED)
        .exclude(server=server)
        .values_list("version_id", flat=True)
        .distinct()
    )
    for version_id in sorted(set(wanted)):
        deployment = Deployment.objects.create(version_id=version_id, server=server, desired=DesiredState.LOADED)
        record(actor, "deployment.deploy", deployment, reason=f"joined group {group.name}")


def _keep_in_step(server: InferenceServer, group: ServerGroup, address: str, actor: Actor) -> None:
    # The group's port, scheme, labels and backends are its members': an edit of the group reaches them.
    wanted = member_fields(group, address)
    changed = sorted(name for name, value in wanted.items() if getattr(server, name) != value)
    if not changed:
        return
    InferenceServer.objects.filter(pk=server.pk).update(**{name: wanted[name] for name in changed})
    record(actor, "inferenceserver.update", server, fields=changed, group=group.name)


def _drain(server: InferenceServer, group: ServerGroup, actor: Actor, now) -> None:
    reason = (
        f"server {server.name} drained at {now.isoformat(timespec='seconds')}: its address {server.address} "
        f"left {group.dns_name} (group {group.name})"
    )
    InferenceServer.objects.filter(pk=server.pk).update(drained_at=now, live=False, ready=False, last_error=reason)
    server.drained_at = now
    count = mark_drained(server, reason)
    record(actor, "inferenceserver.drain", server, group=group.name, address=server.address, deployments=count)


def mark_drained(server: InferenceServer, reason: str = "") -> int:
    """Say "drained" on each deployment of a drained server that is not settled unloaded
    (its desired state stays: it is what the server gets back when it returns)."""
    reason = reason or f"server {server.name} is drained: its address left its group's DNS name"
    count = 0
    rows = (
        Deployment.objects.filter(server=server)
        .exclude(observed=ObservedState.DRAINED)
        .exclude(desired=DesiredState.UNLOADED, observed=ObservedState.UNLOADED)
    )
    for deployment in rows:
        count += observe(deployment, ObservedState.DRAINED, reason, retry_at=deployment.retry_at)
    return count


def _rejoin(server: InferenceServer, group: ServerGroup, actor: Actor) -> None:
    drained_at = server.drained_at
    InferenceServer.objects.filter(pk=server.pk).update(drained_at=None, last_error="")
    server.drained_at = None
    record(
        actor,
        "inferenceserver.rejoin",
        server,
        group=group.name,
        address=server.address,
        drained_at=drained_at.isoformat() if drained_at else None,
    )


def due_groups(now=None) -> list[int]:
    """Enabled groups never resolved, or last resolved at least their interval ago."""
    now = now or timezone.now()
    due = []
    for group in ServerGroup.objects.filter(enabled=True).only("pk", "interval_s", "last_resolved_at"):
        # A second of slack: beat's ticks jitter, and "29.9 s ago" must not wait a whole extra tick.
        if group.last_resolved_at is None or (now - group.last_resolved_at).total_seconds() >= group.interval_s - 1:
            due.append(group.pk)
    return due


# --- groups: the write paths of the API and the admin -----------------------------------

GROUP_FIELDS = {"name", "dns_name", "scheme", "port", "metrics_port", "labels", "backends", "enabled", "interval_s"}


def _resolve_soon(group: ServerGroup) -> None:
    from modelhub.serving.discovery_tasks import sync_group_task

    enqueue_on_commit(
        sync_group_task,
        group.pk,
        recorded=f"server group {group.name!r}",
        picked_up_by="the discover-servers schedule",
    )


def create_group(actor: Actor, **fields) -> ServerGroup:
    """Register a DNS name standing for several servers; it is resolved as soon as it commits."""
    group = ServerGroup(**fields)
    group.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            group.save()
            record(actor, "servergroup.create", group, dns_name=group.dns_name)
            if group.enabled:
                _resolve_soon(group)
    except IntegrityError:
        raise NameTaken(f"a server group named {group.name!r} already exists") from None
    return group


def update_group(group: ServerGroup, actor: Actor, **changes) -> ServerGroup:
    """Change a group; its servers follow (ports, labels, backends) at the resolution queued now."""
    unknown = set(changes) - GROUP_FIELDS
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a server group")
    changed = sorted(k for k, v in changes.items() if getattr(group, k) != v)
    for key, value in changes.items():
        setattr(group, key, value)
    group.full_clean(validate_unique=False)
    if not changed:
        return group
    try:
        with transaction.atomic():
            # Only the fields asked for: discovery writes addresses and last_* meanwhile.
            group.save(update_fields=changed)
            record(actor, "servergroup.update", group, fields=changed)
            if group.enabled:
                _resolve_soon(group)
    except IntegrityError:
        raise NameTaken(f"a server group named {group.name!r} already exists") from None
    return group


def delete_group(group: ServerGroup, actor: Actor) -> None:
    """Forget a group. Refused (InUse) while it has servers: deleting them is a decision
    about their deployments (delete_server's rules), not a side effect."""
    with transaction.atomic():
        ServerGroup.objects.select_for_update().get(pk=group.pk)
        names = list(InferenceServer.objects.filter(group=group).order_by("name").values_list("name", flat=True))
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise InUse(
                f"server group {group.name!r} has servers: {shown}; disable the group to stop discovery, "
                "or delete its servers first"
            )
        record(actor, "servergroup.delete", group, dns_name=group.dns_name)
        group.delete()
