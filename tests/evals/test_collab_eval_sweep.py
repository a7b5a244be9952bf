"""Arbitrage's threshold sweep in ``tandem eval collab``: the routes it adds (each τ reaches the built strategy),
the list parser, and the matched threshold against a brute-force reference."""

from __future__ import annotations

import random
from pathlib import Path

from collab.arbitrage import StepRouter
from collab.registry import default_strategy_registry
from evals.collab_eval import floats, match_threshold, sweep_routes
from evals.collab_tasks import parse_prm, suite_prm


def reference_match(points: list[dict[str, float]], acc: float) -> dict[str, float] | None:
    best = None
    for p in points:
        if p["accuracy"] + 1e-12 < acc:
            continue
        if best is None or p["large_step_share"] < best["large_step_share"] or (
                p["large_step_share"] == best["large_step_share"] and p["tau"] > best["tau"]):
            best = p
    return best


def test_match_threshold_against_reference() -> None:
    rng = random.Random(0)
    for _ in range(200):
        points = [{"tau": rng.choice([-0.1, 0.0, 0.05, 0.1, 0.2]) + rng.random() / 100,
                   "accuracy": rng.choice([0.2, 0.25, 0.3]), "large_step_share": rng.choice([0.4, 0.6, 0.9])}
                  for _ in range(rng.randint(1, 6))]
        acc = rng.choice([0.2, 0.25, 0.3, 0.35])
        assert match_threshold(points, acc) == reference_match(points, acc)
    pts = [{"tau": 0.0, "accuracy": 0.30, "large_step_share": 0.9}, {"tau": 0.1, "accuracy": 0.28,
                                                                    "large_step_share": 0.6}]
    assert match_threshold(pts, 0.30) == pts[0]
    assert match_threshold(pts, 0.30, tolerance=0.02) == pts[1]
    assert match_threshold(pts, 0.31) is None
    # R2R's sweep minimises the large model's token share instead
    tok = [{"tau": 0.1, "accuracy": 0.30, "large_token_share": 0.4, "large_step_share": 0.2},
           {"tau": 0.3, "accuracy": 0.30, "large_token_share": 0.2, "large_step_share": 0.9}]
    assert match_threshold(tok, 0.30, share="large_token_share") == tok[1]
    assert match_threshold(tok, 0.30) == tok[0]


def test_floats() -> None:
    assert floats("0, 0.05,-1") == [0.0, 0.05, -1.0]
    assert floats(None) == [] and floats("") == []


def test_sweep_routes_override_the_artifact_threshold(tmp_path: Path) -> None:
    art = tmp_path / "a.pt"
    StepRouter().save(art, tau=0.5, delimiter="\n")
    routes = sweep_routes("arbitrage", [0.0, 0.1], [0.5], "units", "small", "large", str(art))
    assert [r["name"] for r in routes] == ["arbitrage:0", "arbitrage:0.1", "rsd:0.5"]
    for r in routes[:2]:
        strat = default_strategy_registry().build_from_artifact("arbitrage", r["artifact"], **r["members"], **r["params"])
        assert strat.mode == "router" and strat.tau == r["params"]["tau"] and strat.delimiter == "\n"
    # the route names its PRM; whoever builds the route resolves it (tandem serve passes evals.collab_tasks.parse_prm)
    assert routes[2]["params"]["prm"] == "suite:units"
    params = {**routes[2]["params"], "prm": parse_prm(routes[2]["params"]["prm"])}
    rsd = default_strategy_registry().build_from_artifact("arbitrage", None, **routes[2]["members"], **params)
    assert rsd.mode == "rsd" and rsd.delta == 0.5 and rsd.prm is suite_prm("units")


def test_r2r_sweep_routes_set_the_routers_threshold(tmp_path: Path) -> None:
    from collab.r2r import R2RRouter

    art = tmp_path / "r.pt"
    R2RRouter(vocab_size=32).save(art, tau=0.5)
    routes = sweep_routes("r2r", [0.05, 0.2], [0.5], "sql", "small", "large", str(art))
    assert [r["name"] for r in routes] == ["r2r:0.05", "r2r:0.2"]  # no RSD for R2R
    for r in routes:
        strat = default_strategy_registry().build_from_artifact("r2r", r["artifact"], **r["members"], **r["params"])
        assert strat.tau == r["params"]["tau"] and strat.router is not None
