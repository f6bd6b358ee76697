"""The routing table: which Triton server answers a model (and version) now.

Built from the database by the refresher thread, then only read on the request
path: an immutable snapshot swapped in whole, so a request sees one table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from modelhub.registry.models import Alias, Model
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState, triton_model_name


@dataclass(frozen=True)
class Upstream:
    """A live Triton server, as the connection pool needs it."""

    name: str
    host: str
    port: int
    tls: bool
    path_prefix: str  # base_url's path, e.g. "" or "/triton"


def upstream_from(name: str, base_url: str) -> Upstream:
    parts = urlsplit(base_url)
    tls = parts.scheme == "https"
    return Upstream(name, parts.hostname or "", parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))


@dataclass(frozen=True)
class Target:
    """One version a route sends a share (`weight`, of 100) of its requests to."""

    version: int
    weight: int
    triton_name: str
    servers: tuple[Upstream, ...]  # where the version is loaded; empty: nowhere live
    # Round-robin position; shared by the copies of a table so a rebuild does not reset it.
    turn: itertools.count = field(default_factory=itertools.count, compare=False, repr=False)

    def next_server(self) -> Upstream:
        return self.servers[next(self.turn) % len(self.servers)]


def weighted_cycle(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One period of smooth weighted round-robin (nginx's) over target indexes.

    Each target gets exactly its share of every period, spread evenly: weights
    (50, 50) give 0, 1, 0, 1, … and (90, 10) one canary request in every ten."""
    divisor = math.gcd(*weights)
    reduced = [w // divisor for w in weights]
    total, current, cycle = sum(reduced), [0] * len(reduced), []
    for _ in range(total):
        current = [c + w for c, w in zip(current, reduced, strict=True)]
        chosen = max(range(len(current)), key=current.__getitem__)
        current[chosen] -= total
        cycle.append(chosen)
    return tuple(cycle)


@dataclass(frozen=True)
class Route:
    model: str
    label: str  # "production" or "version 3": names the route in errors
    targets: tuple[Target, ...]
    # A canary's weighted cycle, computed once per table; requests step through it.
    cycle: tuple[int, ...] = (0,)
    turn: itertools.count = field(default_factory=itertools.count, compare=False, repr=False)

    def choose(self) -> Target:
        """The next target by weight: a canary at w % gets exactly w of every 100 requests."""
        if len(self.targets) == 1:
            return self.targets[0]
        return self.targets[self.cycle[next(self.turn) % len(self.cycle)]]


@dataclass(frozen=True)
class RoutingTable:
    models: frozenset[str] = frozenset()  # every registered model, routed or not
    aliased: dict[str, Route] = field(default_factory=dict)  # model -> its alias's route
    pinned: dict[tuple[str, int], Route] = field(default_factory=dict)  # (model, version) -> route
    servers: tuple[Upstream, ...] = ()  # every live server, for calls not about one model
    turn: itertools.count = field(default_factory=itertools.count, compare=False, repr=False)

    def any_server(self) -> Upstream | None:
        return self.servers[next(self.turn) % len(self.servers)] if self.servers else None

    def route(self, model: str, version: int | None) -> Route | None:
        return self.aliased.get(model) if version is None else self.pinned.get((model, version))


@dataclass(frozen=True)
class Snapshot:
    """The rows a table is built from: equal snapshots build equal tables.

    The snapshot doubles as the change marker: comparing the rows themselves catches
    every change (an alias move, a load, a server the health check found down, a
    deleted deployment), which no single timestamp column does."""

    models: tuple[str, ...]
    servers: tuple[tuple[str, str], ...]
    loaded: tuple[tuple[str, int, str], ...]
    aliases: tuple[tuple[str, int, int | None, int], ...]  # model, version, canary version, canary weight


def read_snapshot(alias: str) -> Snapshot:
    """Four small indexed queries; run by the refresher, never per request."""
    live = InferenceServer.objects.filter(enabled=True, drained_at__isnull=True).exclude(live=False)
    loaded = Deployment.objects.filter(
        desired=DesiredState.LOADED, observed=ObservedState.LOADED, server__in=live
    ).order_by("server__name", "version__model__name", "version__number")
    return Snapshot(
        models=tuple(Model.objects.order_by("name").values_list("name", flat=True)),
        servers=tuple(live.order_by("name").values_list("name", "base_url")),
        loaded=tuple(loaded.values_list("version__model__name", "version__number", "server__name")),
        aliases=tuple(
            Alias.objects.filter(name=alias)
            .order_by("model__name")
            .values_list("model__name", "version__number", "canary_version__number", "canary_weight")
        ),
    )


def build_table(snapshot: Snapshot, alias: str, previous: RoutingTable | None = None) -> RoutingTable:
    upstreams = {name: upstream_from(name, url) for name, url in snapshot.servers}
    where: dict[tuple[str, int], list[Upstream]] = {}
    for model, number, server in snapshot.loaded:
        where.setdefault((model, number), []).append(upstreams[server])
    old_turns = _turns(previous)

    def target(model: str, number: int, weight: int) -> Target:
        servers = tuple(where.get((model, number), ()))
        turn = old_turns.get((model, number)) or itertools.count()
        old_turns[(model, number)] = turn
        return Target(number, weight, triton_model_name(model, number), servers, turn)

    def route(model: str, number: int, label: str) -> Route:
        return Route(model, label, (target(model, number, 100),))

    def aliased_route(model: str, number: int, canary: int | None, weight: int) -> Route:
        # A canary loaded nowhere live gets no traffic: the alias's version takes it all.
        if canary is None or not where.get((model, canary)):
            return route(model, number, alias)
        targets = (target(model, number, 100 - weight), target(model, canary, weight))
        cycle = weighted_cycle((100 - weight, weight))
        old = previous.aliased.get(model) if previous is not None else None
        # The same split as before keeps its place in the cycle: a rebuild does not skew the shares.
        turn = old.turn if old is not None and old.targets == targets and old.cycle == cycle else itertools.count()
        return Route(model, alias, targets, cycle, turn)

    pinned = {key: route(*key, f"version {key[1]}") for key in where}
    aliased = {row[0]: aliased_route(*row) for row in snapshot.aliases}
    return RoutingTable(frozenset(snapshot.models), aliased, pinned, tuple(upstreams.values()))


def _turns(table: RoutingTable | None) -> dict[tuple[str, int], itertools.count]:
    if table is None:
        return {}
    routes = list(table.pinned.values()) + list(table.aliased.values())
    return {(r.model, t.version): t.turn for r in routes for t in r.targets}
