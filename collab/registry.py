"""A registry of collaboration strategies by name (:class:`StrategyRegistry`), with a cache of loaded router files.

A registry is a plain object (no module-level state): :func:`default_strategy_registry` builds one holding the
built-in strategies (``arbitrage``, ``fusionroute``, ``r2r``, ``single``). It maps a name to a
:class:`~collab.strategy.CollabStrategy` subclass and knows nothing of any one strategy: each builds itself from its
training file (``load_artifact`` / ``from_loaded``); the registry only caches what ``load_artifact`` read, by path
and modification time, so a route can build a strategy per request. What it leaves out: the strategy interface
(``collab.strategy``), the strategies and their file formats (their modules) and the session's models.
"""

from __future__ import annotations

import os
from typing import Any

from collab.arbitrage import ArbitrageStrategy
from collab.fusionroute import FusionRouteStrategy
from collab.r2r import R2RStrategy
from collab.single import SingleModel
from collab.strategy import CollabStrategy


class StrategyRegistry:
    """Strategy name → strategy class, plus a cache of loaded router files (by path and modification time)."""

    def __init__(self) -> None:
        self._strategies: dict[str, type[CollabStrategy]] = {}
        self._artifacts: dict[tuple[str, str, float], Any] = {}

    def register(self, name: str, strategy: type[CollabStrategy]) -> None:
        if name in self._strategies:
            raise ValueError(f"collab strategy '{name}' is already registered")
        self._strategies[name] = strategy

    def names(self) -> list[str]:
        return sorted(self._strategies)

    def strategy(self, name: str) -> type[CollabStrategy]:
        """The class registered as ``name``."""
        try:
            return self._strategies[name]
        except KeyError:
            raise KeyError(f"unknown collab strategy '{name}' (have {self.names()})") from None

    def build(self, name: str, **kwargs: Any) -> CollabStrategy:
        """A strategy by name (``r2r``, ``fusionroute``, ``arbitrage``, ``single``) with its constructor arguments."""
        return self.strategy(name)(**kwargs)

    def _loaded(self, name: str, artifact: str) -> Any:
        key = (name, os.path.abspath(artifact), os.path.getmtime(artifact))
        hit = self._artifacts.get(key)
        if hit is None:
            hit = self._artifacts[key] = self.strategy(name).load_artifact(artifact)
        return hit

    def build_from_artifact(self, name: str, artifact: str | None = None, **kwargs: Any) -> CollabStrategy:
        """A strategy by name with its trained router loaded from ``artifact`` (``tandem train NAME --out FILE``);
        what the file holds besides the router (a calibrated threshold, ...) fills the arguments not given (see each
        strategy's ``from_loaded``). Without an artifact: :meth:`build`. Loaded files are cached."""
        if artifact is None:
            return self.build(name, **kwargs)
        return self.strategy(name).from_loaded(self._loaded(name, artifact), **kwargs)


def default_strategy_registry() -> StrategyRegistry:
    """A fresh registry with the built-in strategies."""
    reg = StrategyRegistry()
    for name, strategy in (("arbitrage", ArbitrageStrategy), ("fusionroute", FusionRouteStrategy),
                           ("r2r", R2RStrategy), ("single", SingleModel)):  # fmt: skip
        reg.register(name, strategy)
    return reg
