"""Route chains (gateway/dispatch.py): a route's own fallbacks, then what the routers that led to it would try."""

from __future__ import annotations

from gateway.dispatch import BackendRoute, RouterRoute, RouteTable
from routers.base import Record
from routers.registry import default_router_registry


def _best_router(candidates: list[str], best: str):
    """A real `best` router fitted on records where ``best`` always passes."""
    records = [Record(prompt=f"q{i}", candidate=c, score=float(c == best), cost=0.001)
               for i in range(10) for c in candidates]
    return default_router_registry().create("best").fit(records)


def test_router_names_its_other_candidates_by_score_then_its_fallbacks() -> None:
    route = RouterRoute("r", _best_router(["a", "b", "c"], "b"), ["a", "b", "c"], fallbacks=["z"])
    chosen, decision = route.pick("anything")
    assert chosen == "b" and decision["fallbacks"] == ["a", "c", "z"]  # no scores: the candidates' order
    assert route.fallbacks_after("b", {"a": 0.3, "b": 0.9, "c": 0.6}) == ["c", "a", "z"]
    assert route.fallbacks_after("b", {"c": 0.6}) == ["c", "a", "z"]  # unscored ones after the scored
    strict = RouterRoute("r", route.router, ["a", "b", "c"], fallbacks=["z"], candidate_fallback=False)
    assert strict.pick("anything")[1]["fallbacks"] == ["z"]


def test_chain_walks_fallbacks_then_router_fallbacks_once_each_skipping_routers() -> None:
    routes = {
        "a": BackendRoute("a", None, fallbacks=["b"]),  # type: ignore[arg-type] - chains never touch the backend
        "b": BackendRoute("b", None),  # type: ignore[arg-type]
        "c": BackendRoute("c", None, fallbacks=["a"]),  # type: ignore[arg-type]
        "r": RouterRoute("r", None, ["a", "c"]),
    }
    table = RouteTable(routes, "a")
    outer = {"chosen": "r", "fallbacks": ["c"]}
    inner = {"chosen": "a", "fallbacks": ["r", "b", "c"]}
    then = RouteTable.router_fallbacks([outer, inner])
    assert then == ["r", "b", "c", "c"]  # the innermost router's list first
    assert [r.name for r in table.chain(routes["a"], then)] == ["a", "b", "c"]
    assert [r.name for r in table.chain(routes["a"])] == ["a", "b"]


def test_routes_describe_themselves_for_the_models_list_and_the_start_up_log() -> None:
    from gateway.backends.openai_http import OpenAIHTTPBackend

    b = BackendRoute("small", OpenAIHTTPBackend("m-small", "http://127.0.0.1:1/v1", kind="vllm"), description="s")
    r = RouterRoute("auto", None, ["small", "large"], description="picks")  # type: ignore[arg-type]
    assert b.describe() == {"kind": "backend", "backend": "m-small", "candidates": None, "description": "s"}
    assert r.describe() == {"kind": "router", "backend": None, "candidates": ["small", "large"], "description": "picks"}
    assert b.target == "vllm backend m-small" and r.target == "router over small, large"
