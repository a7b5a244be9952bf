"""The route-kinds registry: which builder turns a route config of each ``kind`` into a route of the table.

A :class:`RouteKindRegistry` maps a kind (``backend``, ``router``, ``collab``, ``tcar``) to a builder that takes the
route's typed config (``gateway.config.*RouteConfig``) and a :class:`RouteBuildContext` and returns a
:class:`~gateway.dispatch.Route`. :func:`default_route_kind_registry` returns a fresh one with the built-in kinds;
:func:`build_routes` builds a whole table with one. There are no module-level singletons: the gateway's state owns
its registry.

The build context is what the routes of one table share: the backends, the agent store (TCAR), one sentence
:class:`~routers.embedder.Embedder` (router and TCAR routes; made when first asked for), one collaboration
strategy registry (made when first asked for), the resolver of named process rewards (``prm: "suite:NAME"`` in a
collab route's params; the command line supplies it, the gateway itself knows no suite), and hooks a builder asks to
run once the table exists (a TCAR route calls other routes of its own table).

What it leaves out: reading configs (``gateway.config``), building backends (``gateway.backends.registry``) and what
the routes do per request (``gateway.dispatch``, ``gateway.backends.collab_backend``, ``gateway.tcar_route``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.backends.base import Backend
from gateway.backends.collab_backend import CollabBackend
from gateway.balancer import Balancer
from gateway.config import (
    BackendRouteConfig,
    CollabRouteConfig,
    RouterRouteConfig,
    TandemConfig,
    TcarRouteConfig,
)
from gateway.dispatch import BackendRoute, Route, RouterRoute, RouteTable, deployments_route
from gateway.errors import ConfigError
from gateway.paths import cache_dir
from gateway.tcar_route import TcarBackend
from routers.embedder import Embedder

if TYPE_CHECKING:
    from collab.protocol import ProcessReward
    from collab.registry import StrategyRegistry
    from gateway.storage.agents import AgentStore
    from routers.base import Router

PrmResolver = Callable[[str], "ProcessReward"]
"""A named process reward (``"suite:arithmetic"``) → the process reward; raises ``ValueError`` for an unknown name."""
RouteBuilder = Callable[[Any, "RouteBuildContext"], Route]
"""A route kind's builder: (its typed route config, the build context) → the route."""
TableHook = Callable[[RouteTable], None]


class RouteBuildContext:
    """What the route builders of one table share (see the module docstring)."""

    def __init__(self, backends: dict[str, Backend], agents: AgentStore | None = None,
                 prm_resolver: PrmResolver | None = None) -> None:
        self.backends = backends
        self.agents = agents
        self.prm_resolver = prm_resolver
        self._embedder: Embedder | None = None
        self._strategies: StrategyRegistry | None = None
        self._table_hooks: list[TableHook] = []

    def embedder(self) -> Embedder:
        """The table's one sentence embedder, caching on disk in ``gateway.paths.cache_dir()`` (made at the first call;
        the model itself loads at its first miss)."""
        if self._embedder is None:
            self._embedder = Embedder(cache_dir=cache_dir())
        return self._embedder

    def strategies(self) -> StrategyRegistry:
        """The table's one collaboration strategy registry (made at the first call)."""
        if self._strategies is None:
            from collab.registry import default_strategy_registry  # torch: only for tables with collaborations

            self._strategies = default_strategy_registry()
        return self._strategies

    def when_table(self, hook: TableHook) -> None:
        """Run ``hook(table)`` once the table holding every route exists."""
        self._table_hooks.append(hook)

    def table_built(self, table: RouteTable) -> None:
        """Run the hooks of :meth:`when_table`, in the order they were asked for."""
        for hook in self._table_hooks:
            hook(table)


class RouteKindRegistry:
    """Route kind → builder (a callable taking the typed route config and the build context, returning a Route)."""

    def __init__(self) -> None:
        self._builders: dict[str, RouteBuilder] = {}

    def register(self, kind: str, builder: RouteBuilder, *, replace: bool = False) -> None:
        if kind in self._builders and not replace:
            raise ValueError(f"route kind '{kind}' is already registered")
        self._builders[kind] = builder

    def kinds(self) -> list[str]:
        return sorted(self._builders)

    def builder(self, kind: str) -> RouteBuilder:
        try:
            return self._builders[kind]
        except KeyError:
            raise ConfigError(f"unknown route kind '{kind}' (known: {', '.join(self.kinds())})",
                              param="kind") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._builders

    def build(self, route: Any, ctx: RouteBuildContext) -> Route:
        """The route a typed route config describes (its ``kind`` picks the builder)."""
        return self.builder(route.kind)(route, ctx)


def load_router(path: str, knob: float | None, embedder: Embedder | None = None) -> Router:
    """A trained router artifact (``routers.base.Router.save``), using ``embedder`` for its sentence embeddings."""
    from routers.base import Router  # numpy/scipy and the router classes: only for tables with router routes

    router = Router.load(Path(path).expanduser())
    if knob is not None:
        router.knob = knob
    router.embedder = embedder
    return router


def collab_params(route: CollabRouteConfig, prm_resolver: PrmResolver | None) -> dict[str, Any]:
    """The strategy arguments of a collab route, a named process reward (``prm: "suite:NAME"``) resolved."""
    params: dict[str, Any] = dict(route.params)
    prm = params.get("prm")
    if isinstance(prm, str):
        if prm_resolver is None:
            raise ConfigError(f"route '{route.name}': params.prm '{prm}' names a process reward, and this gateway "
                              "was started without a resolver for it: suite PRMs are supplied by the command line "
                              "(tandem serve)", param="params.prm")
        try:
            params["prm"] = prm_resolver(prm)
        except ValueError as e:
            raise ConfigError(f"route '{route.name}': params.prm: {e}", param="params.prm") from None
    return params


def build_backend_route(route: BackendRouteConfig, ctx: RouteBuildContext) -> Route:
    if route.deployments is not None:  # several replicas of one model: a balancer picks one per request
        balancer = Balancer([(d.backend, d.weight) for d in route.deployments], route.strategy,
                            load_factor=route.load_factor, prefix_chars=route.prefix_chars)
        return deployments_route(route.name, [ctx.backends[d.backend] for d in route.deployments], balancer,
                                 route.fallbacks, route.retries, route.description)
    assert route.backend is not None  # the config's validator: one of backend or deployments
    return BackendRoute(route.name, ctx.backends[route.backend], list(route.fallbacks), route.retries,
                        route.description)


def build_router_route(route: RouterRouteConfig, ctx: RouteBuildContext) -> Route:
    return RouterRoute(route.name, load_router(route.artifact, route.knob, ctx.embedder()), list(route.candidates),
                       dict(route.model_map), route.description, fallbacks=list(route.fallbacks),
                       candidate_fallback=route.candidate_fallback)


def build_collab_route(route: CollabRouteConfig, ctx: RouteBuildContext) -> Route:
    members = {name: ctx.backends[name] for name in dict.fromkeys(route.members.values())}
    collab = CollabBackend(route.name, route.strategy, members, dict(route.members), ctx.strategies(),
                           route.artifact, collab_params(route, ctx.prm_resolver), route.tokenizer)
    return BackendRoute(route.name, collab, list(route.fallbacks), 0, route.description, kind="collab")


def build_tcar_route(route: TcarRouteConfig, ctx: RouteBuildContext) -> Route:
    tcar = TcarBackend(route.name, route.router_route, route.refine_route, route.max_agents, ctx.agents,
                       ctx.embedder().embed, dict(route.params))
    ctx.when_table(tcar.bind)  # it calls the router, agent and refine routes of its own table
    return BackendRoute(route.name, tcar, list(route.fallbacks), 0, route.description, kind="tcar")


def default_route_kind_registry() -> RouteKindRegistry:
    """A new registry with the built-in kinds: backend, router, collab, tcar."""
    reg = RouteKindRegistry()
    reg.register("backend", build_backend_route)
    reg.register("router", build_router_route)
    reg.register("collab", build_collab_route)
    reg.register("tcar", build_tcar_route)
    return reg


def build_routes(cfg: TandemConfig, backends: dict[str, Backend], agents: AgentStore | None = None, *,
                 prm_resolver: PrmResolver | None = None, kinds: RouteKindRegistry | None = None) -> RouteTable:
    """Every backend is a route of its own name; configured routes add names (or take a backend's name over).
    Router artifacts are loaded here (blocking: call from a worker thread). TCAR routes read ``agents``; collab routes
    resolve a named ``prm`` with ``prm_resolver``."""
    kinds = kinds or default_route_kind_registry()
    ctx = RouteBuildContext(backends, agents, prm_resolver)
    routes: dict[str, Route] = {name: BackendRoute(name, b) for name, b in backends.items()}
    for r in cfg.routes:
        routes[r.name] = kinds.build(r, ctx)
    default = cfg.default_route or (cfg.routes[0].name if cfg.routes else next(iter(routes), ""))
    if not routes:
        raise ValueError("no backends configured")
    table = RouteTable(routes, default)
    ctx.table_built(table)
    return table
