"""The route-kinds registry: each kind's builder gets its typed config and the shared build context; TCAR routes are
bound to their table through a declared hook; a collab route's named process reward is resolved by the caller's
resolver (the gateway knows no suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.backends.base import Backend, ChatRequest, StreamEvent
from gateway.config import parse_config
from gateway.dispatch import BackendRoute, RouterRoute
from gateway.errors import ConfigError
from gateway.route_kinds import (
    RouteBuildContext,
    build_routes,
    collab_params,
    default_route_kind_registry,
)
from gateway.tcar_route import TcarBackend
from gateway.usage import Price


class Silent(Backend):
    kind = "fake"

    def __init__(self, name: str) -> None:
        super().__init__(name, Price())

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(delta={"content": ""})


class Reward:
    """A stand-in process reward (``collab.protocol.ProcessReward``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def scorer(self, prompt_text: str):
        return lambda prefix, step: 1.0


BACKENDS = [{"name": "a", "kind": "local", "path": "/x"}, {"name": "b", "kind": "local", "path": "/y"}]


def _backends() -> dict[str, Backend]:
    return {"a": Silent("a"), "b": Silent("b")}


def test_default_registry_has_the_four_kinds_and_refuses_duplicates():
    reg = default_route_kind_registry()
    assert reg.kinds() == ["backend", "collab", "router", "tcar"] and "tcar" in reg and "warp" not in reg
    with pytest.raises(ValueError, match="already registered"):
        reg.register("backend", lambda route, ctx: None)
    with pytest.raises(ConfigError, match="unknown route kind 'warp'"):
        reg.builder("warp")


def test_build_routes_goes_through_the_registry_with_typed_configs():
    cfg = parse_config({"backends": BACKENDS, "routes": [
        {"name": "first", "backend": "a", "retries": 3, "fallbacks": ["b"], "description": "d"},
        {"name": "second", "kind": "backend", "backend": "b"}]})
    seen: list[tuple[type, RouteBuildContext]] = []
    reg = default_route_kind_registry()
    builtin = reg.builder("backend")

    def spy(route, ctx):
        seen.append((type(route), ctx))
        return builtin(route, ctx)

    reg.register("backend", spy, replace=True)
    table = build_routes(cfg, _backends(), kinds=reg)
    assert [t.__name__ for t, _ in seen] == ["BackendRouteConfig", "BackendRouteConfig"]
    assert seen[0][1] is seen[1][1]  # one context per table
    first = table.routes["first"]
    assert isinstance(first, BackendRoute) and first.backend.name == "a"
    assert (first.retries, first.fallbacks, first.description, first.kind) == (3, ["b"], "d", "backend")
    assert set(table.names()) == {"a", "b", "first", "second"} and table.default == "first"


def test_tcar_routes_are_bound_to_their_table(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    cfg = parse_config({"backends": BACKENDS, "routes": [
        {"name": "agent", "backend": "b"},
        {"name": "t1", "kind": "tcar", "router_route": "a", "refine_route": "agent", "max_agents": 2,
         "params": {"router_max_tokens": 64}},
        {"name": "t2", "kind": "tcar", "router_route": "a", "refine_route": "b"}]})
    table = build_routes(cfg, _backends())
    t1, t2 = table.routes["t1"].backend, table.routes["t2"].backend
    assert isinstance(t1, TcarBackend) and table.routes["t1"].kind == "tcar"
    assert t1.table is table and t2.table is table
    assert (t1.router_route, t1.refine_route, t1.max_agents, t1.router_max_tokens) == ("a", "agent", 2, 64)
    assert t1.embed.__self__ is t2.embed.__self__  # one sentence embedder per table
    assert t1.embed.__self__.cache_path.parent == tmp_path  # cached under gateway.paths.cache_dir()


def test_context_makes_one_embedder_and_runs_table_hooks_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    ctx = RouteBuildContext({})
    assert ctx.embedder() is ctx.embedder()
    calls: list[tuple[str, object]] = []
    ctx.when_table(lambda t: calls.append(("one", t)))
    ctx.when_table(lambda t: calls.append(("two", t)))
    ctx.table_built("T")  # type: ignore[arg-type]
    assert calls == [("one", "T"), ("two", "T")]


def _rsd(**params) -> object:
    cfg = parse_config({"backends": BACKENDS, "routes": [
        {"name": "rsd", "kind": "collab", "strategy": "arbitrage", "members": {"draft": "a", "target": "b"},
         "params": {"mode": "rsd", "delta": 0.5, **params}}]})
    return cfg


def test_collab_params_resolve_a_named_prm():
    route = _rsd(prm="suite:units").routes[0]
    asked: list[str] = []

    def resolver(name: str) -> Reward:
        asked.append(name)
        return Reward(name)

    params = collab_params(route, resolver)
    assert asked == ["suite:units"] and isinstance(params["prm"], Reward) and params["prm"].name == "suite:units"
    assert params["mode"] == "rsd" and params["delta"] == 0.5
    assert route.params["prm"] == "suite:units"  # the config itself is left as written
    assert collab_params(_rsd().routes[0], None) == {"mode": "rsd", "delta": 0.5}  # nothing to resolve


def test_a_named_prm_without_a_resolver_is_a_config_error_naming_the_route():
    cfg = _rsd(prm="suite:units")
    with pytest.raises(ConfigError) as e:
        build_routes(cfg, _backends())
    assert "route 'rsd'" in e.value.message and "suite:units" in e.value.message
    assert "command line" in e.value.message


def test_an_unknown_prm_name_is_a_config_error():
    def resolver(name: str) -> Reward:
        raise ValueError(f"unknown PRM {name!r}")

    with pytest.raises(ConfigError, match="route 'rsd': params.prm: unknown PRM 'judge:x'"):
        collab_params(_rsd(prm="judge:x").routes[0], resolver)


def test_collab_route_gets_the_resolved_prm(zoo_tokenizer_dir):
    cfg = parse_config({"backends": BACKENDS, "routes": [
        {"name": "rsd", "kind": "collab", "strategy": "arbitrage", "members": {"draft": "a", "target": "b"},
         "tokenizer": str(zoo_tokenizer_dir), "params": {"mode": "rsd", "prm": "suite:units"}, "fallbacks": ["a"]}]})
    reward = Reward("suite:units")
    table = build_routes(cfg, _backends(), prm_resolver=lambda name: reward)
    route = table.routes["rsd"]
    assert isinstance(route, BackendRoute) and route.kind == "collab" and route.retries == 0
    assert route.fallbacks == ["a"]
    assert route.backend.params["prm"] is reward and route.backend.roles == {"draft": "a", "target": "b"}
    assert set(route.backend.members) == {"a", "b"}


def test_router_route_loads_its_artifact(tmp_path, monkeypatch):
    from routers.base import Record
    from routers.registry import default_router_registry

    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    records = [Record(prompt=f"q{i}", candidate=c, score=s, cost=k) for i in range(4)
               for c, s, k in (("a", 0.0, 0.001), ("b", 1.0, 0.01))]
    path = tmp_path / "best.pkl"
    default_router_registry().create("best").fit(records).save(path)
    cfg = parse_config({"backends": BACKENDS, "routes": [
        {"name": "pick", "kind": "router", "router": "best", "artifact": str(path), "candidates": ["a", "b"],
         "knob": 2.0, "candidate_fallback": False, "model_map": {"x": "a"}}]})
    table = build_routes(cfg, _backends())
    route = table.routes["pick"]
    assert isinstance(route, RouterRoute) and route.candidates == ["a", "b"] and route.model_map == {"x": "a"}
    assert route.router.knob == 2.0 and route.candidate_fallback is False
    assert route.router.embedder.cache_path.parent == tmp_path
