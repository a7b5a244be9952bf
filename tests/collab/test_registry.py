"""The strategy registry: names → strategy classes with no per-name code (a new class with its own file format builds
through ``build_from_artifact``), the loaded-file cache by path and modification time, the built-in strategies'
defaults from their files, and no import of the registry from any strategy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collab.arbitrage import ArbitrageStrategy, StepRouter
from collab.fusionroute import RoutingHead, expert_order, save_fusionroute
from collab.r2r import R2RRouter, R2RStrategy
from collab.registry import StrategyRegistry, default_strategy_registry
from collab.session import Session
from collab.strategy import CollabStrategy


class Echo(CollabStrategy):
    """A strategy with a JSON "router file": it repeats the file's token with ``model``."""

    name = "echo"
    reads: list[str] = []

    def __init__(self, model: str, *, token: int = 0, times: int = 1):
        self.model, self.token, self.times = model, token, times

    @classmethod
    def load_artifact(cls, path: str | Path) -> dict[str, Any]:
        cls.reads.append(str(path))
        return json.loads(Path(path).read_text())

    @classmethod
    def from_loaded(cls, loaded: dict[str, Any], **kwargs: Any) -> Echo:
        kwargs.setdefault("token", loaded["token"])
        return cls(**kwargs)

    async def advance(self, session: Session, budget: int) -> None:
        for _ in range(min(self.times, budget)):
            session.append(self.token, self.model)


class _Remote:
    """A model that is never called (the echo strategy writes without it)."""

    def __init__(self, name: str):
        self.name = name

    async def complete_ids(self, ids: list[int], max_tokens: int, **kw: Any) -> Any:
        raise AssertionError("not called")


def test_builtin_strategies_build_by_name() -> None:
    registry = default_strategy_registry()
    assert registry.names() == ["arbitrage", "fusionroute", "r2r", "single"]
    s = registry.build("r2r", slm="a", llm="b", tau=1.0)
    assert isinstance(s, R2RStrategy) and s.name == "r2r"
    with pytest.raises(KeyError, match="unknown collab strategy 'nope'"):
        registry.build("nope")
    with pytest.raises(ValueError):
        registry.build("r2r", slm="a", llm="b", tau=0.5)  # a threshold in (0, 1) needs a router
    with pytest.raises(ValueError, match="already registered"):
        registry.register("r2r", R2RStrategy)


def test_a_new_strategy_builds_from_its_own_file_and_is_cached(tmp_path: Path) -> None:
    art = tmp_path / "echo.json"
    art.write_text(json.dumps({"token": 7}))
    registry = StrategyRegistry()
    registry.register("echo", Echo)
    Echo.reads.clear()
    s = registry.build_from_artifact("echo", str(art), model="m", times=2)
    assert isinstance(s, Echo) and (s.model, s.token, s.times) == ("m", 7, 2)
    assert registry.build_from_artifact("echo", str(art), model="m", token=3).token == 3  # an argument wins
    assert Echo.reads == [str(art)]  # read once for the same path and modification time
    art.write_text(json.dumps({"token": 9}))
    st = os.stat(art)
    os.utime(art, (st.st_atime, st.st_mtime + 5))
    assert registry.build_from_artifact("echo", str(art), model="m").token == 9
    assert len(Echo.reads) == 2
    gen = asyncio.run(s.run(Session({"m": _Remote("m")}, [1]), 4))
    assert gen.output == [7, 7, 7, 7] and set(gen.provenance) == {"m"}
    assert registry.build_from_artifact("echo", None, model="m").token == 0  # no file: plain build


def test_a_strategy_without_a_router_file_refuses_one(tmp_path: Path) -> None:
    art = tmp_path / "r.pt"
    R2RRouter(16).save(art, tau=0.25)
    with pytest.raises(ValueError, match="strategy 'single' takes no router artifact"):
        default_strategy_registry().build_from_artifact("single", str(art), model="x")
    with pytest.raises(ValueError, match="is not a arbitrage router"):
        default_strategy_registry().build_from_artifact("arbitrage", str(art), draft="a", target="b")


def test_builtin_defaults_come_from_the_file(tmp_path: Path) -> None:
    registry = default_strategy_registry()
    r2r = tmp_path / "r.pt"
    R2RRouter(16, k=4).save(r2r, tau=0.25)
    s = registry.build_from_artifact("r2r", str(r2r), slm="a", llm="b")
    assert isinstance(s, R2RStrategy) and s.tau == 0.25 and s.k == 4 and isinstance(s.router, R2RRouter)
    assert registry.build_from_artifact("r2r", str(r2r), slm="a", llm="b", tau=0.75).tau == 0.75
    arb = tmp_path / "a.pt"
    StepRouter().save(arb, tau=0.1, delimiter="\n")
    a = registry.build_from_artifact("arbitrage", str(arb), draft="a", target="b")
    assert isinstance(a, ArbitrageStrategy) and (a.tau, a.delimiter, a.mode) == (0.1, "\n", "router")
    a = registry.build_from_artifact("arbitrage", str(arb), draft="a", target="b", tau=0.3, delimiter="x")
    assert (a.tau, a.delimiter) == (0.3, "x")
    fr = tmp_path / "f.pt"
    save_fusionroute(fr, RoutingHead(8, 2), ["e1", "e2"], None)
    f = registry.build_from_artifact("fusionroute", str(fr), router="r", e2="m2", e1="m1", k=5)
    assert (f.router, f.experts, f.k, f.router_model) == ("r", ["m1", "m2"], 5, None)
    f = registry.build_from_artifact("fusionroute", str(fr), router="r", experts="m2, m1")
    assert f.experts == ["m2", "m1"]


def test_expert_order() -> None:
    saved = ["sql", "units"]
    assert expert_order(saved, {"units": "b", "sql": "a"}) == ["a", "b"]  # by role name
    assert expert_order(saved, {"x": "units", "y": "sql"}) == ["sql", "units"]  # by member name
    assert expert_order(saved, {"x": "p", "y": "q"}) == ["p", "q"]  # neither: the route's order


def test_strategies_do_not_import_the_registry() -> None:
    code = ("import sys, collab.strategy, collab.r2r, collab.arbitrage, collab.fusionroute, collab.single, "
            "collab.labels; assert 'collab.registry' not in sys.modules, 'a strategy imports collab.registry'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
