"""The strategy interface (:class:`CollabStrategy`) and a registry of strategies by name (:class:`StrategyRegistry`).

A strategy has one job: :meth:`CollabStrategy.advance` appends one or more tokens to a :class:`~collab.session.Session`
(each with the model that wrote it). The base class turns that into a stream (:meth:`CollabStrategy.generate`, async
iterator of ``Emitted(token_id, text, model)``) and a one-shot run (:meth:`CollabStrategy.run`), which is what the
gateway serves as a ``collab`` route. A registry is a plain object (no module-level state):
:func:`default_strategy_registry` builds one holding the built-in strategies; it also caches loaded router files.
What it leaves out: building the session's models (the caller brings them) and the routers' formats (each strategy
module's ``load``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any

from collab.session import Emitted, Generation, Session


class CollabStrategy(ABC):
    """A token-level collaboration strategy over the models of a session."""

    name: str = "strategy"

    @abstractmethod
    async def advance(self, session: Session, budget: int) -> None:
        """Append between 1 and ``budget`` tokens to ``session`` (stop earlier if a stop token is appended)."""

    def prepare(self, session: Session) -> None:  # noqa: B027 — optional hook
        """Called once before the first :meth:`advance` (check the session has the models this strategy needs)."""

    async def generate(self, session: Session, max_tokens: int) -> AsyncIterator[Emitted]:
        """Stream the answer: each token with its text piece and the model that wrote it."""
        self.prepare(session)
        while not session.done and len(session.output) < max_tokens:
            before = len(session.output)
            text_before = session.text
            await self.advance(session, max_tokens - before)
            if len(session.output) == before:
                raise RuntimeError(f"strategy '{self.name}' appended no token")
            new = session.output[before:]
            who = session.provenance[before:]
            full = session.text[len(text_before):]
            for j, (tok, model) in enumerate(zip(new, who, strict=True)):
                yield Emitted(tok, full if j == len(new) - 1 else "", model)
        if not session.done:
            session.finish_reason = "length"

    async def run(self, session: Session, max_tokens: int) -> Generation:
        """Generate to the end and return the whole :class:`Generation`."""
        async for _ in self.generate(session, max_tokens):
            pass
        return Generation(list(session.output), list(session.provenance), session.usage(),
                          session.finish_reason or "length", session.text)


def _load_artifact(name: str, artifact: str) -> tuple[Any, dict[str, Any]]:
    """(router object, saved metadata) of a training file."""
    if name == "r2r":
        from collab.r2r import R2RRouter

        loaded: tuple[Any, dict[str, Any]] = R2RRouter.load(artifact)
    elif name == "arbitrage":
        from collab.arbitrage import StepRouter

        loaded = StepRouter.load(artifact)
    elif name == "fusionroute":
        from collab.fusionroute import load_fusionroute, router_model_from

        head, experts, blob = load_fusionroute(artifact)
        model = router_model_from(blob)
        if model is not None:
            from collab.inproc import HFModel

            model = HFModel(str(blob.get("router") or "router"), model=model)
        loaded = ((head, experts, model), blob)
    else:
        raise ValueError(f"strategy '{name}' takes no router artifact")
    return loaded


def _fusion_kwargs(loaded: tuple[Any, list[str], Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """FusionRoute from roles: ``router`` plus one role per expert. Experts are ordered as the file's head scores
    them, matched by role name or member name; otherwise they keep the route's order."""
    head, saved, model = loaded
    kwargs = dict(kwargs)
    router = kwargs.pop("router")
    params = {k: kwargs.pop(k) for k in ("k",) if k in kwargs}
    if "experts" in kwargs:
        ex = kwargs.pop("experts")
        experts = [e.strip() for e in ex.split(",")] if isinstance(ex, str) else list(ex)
    else:
        by_role = dict(kwargs)
        if set(saved) <= set(by_role):
            experts = [by_role[e] for e in saved]
        elif set(saved) <= set(by_role.values()):
            experts = list(saved)
        else:
            experts = list(by_role.values())
    return {"router": router, "experts": experts, "head": head, "router_model": model, **params}


class StrategyRegistry:
    """Strategy name → factory, plus a cache of loaded router files (by path and modification time)."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable[..., CollabStrategy]] = {}
        self._artifacts: dict[tuple[str, str, float], tuple[Any, dict[str, Any]]] = {}

    def register(self, name: str, factory: Callable[..., CollabStrategy]) -> None:
        if name in self._factories:
            raise ValueError(f"collab strategy '{name}' is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, name: str, **kwargs: Any) -> CollabStrategy:
        """A strategy by name (``r2r``, ``fusionroute``, ``arbitrage``, ``single``) with its constructor arguments."""
        try:
            factory = self._factories[name]
        except KeyError:
            raise KeyError(f"unknown collab strategy '{name}' (have {self.names()})") from None
        return factory(**kwargs)

    def _loaded(self, name: str, artifact: str) -> tuple[Any, dict[str, Any]]:
        import os

        key = (name, os.path.abspath(artifact), os.path.getmtime(artifact))
        hit = self._artifacts.get(key)
        if hit is None:
            hit = self._artifacts[key] = _load_artifact(name, artifact)
        return hit

    def build_from_artifact(self, name: str, artifact: str | None = None, **kwargs: Any) -> CollabStrategy:
        """A strategy by name with its trained router loaded from ``artifact`` (``tandem train NAME --out FILE``).
        The artifact's calibrated threshold (and Arbitrage's step delimiter) is used unless given. FusionRoute takes
        the roles ``router`` and one per expert, and runs the tuned router saved in the file. Without an artifact:
        :meth:`build`. Loaded files are cached, so a route can build a strategy per request."""
        if artifact is None:
            return self.build(name, **kwargs)
        loaded, meta = self._loaded(name, artifact)
        if name == "fusionroute":
            return self.build(name, **_fusion_kwargs(loaded, kwargs))
        kwargs.setdefault("router", loaded)
        if meta.get("tau") is not None:
            kwargs.setdefault("tau", float(meta["tau"]))
        if name == "arbitrage" and meta.get("delimiter") is not None:
            kwargs.setdefault("delimiter", str(meta["delimiter"]))
        return self.build(name, **kwargs)


def default_strategy_registry() -> StrategyRegistry:
    """A fresh registry with the built-in strategies."""
    from collab.arbitrage import ArbitrageStrategy
    from collab.fusionroute import FusionRouteStrategy
    from collab.r2r import R2RStrategy
    from collab.single import SingleModel

    reg = StrategyRegistry()
    for name, factory in (("arbitrage", ArbitrageStrategy), ("fusionroute", FusionRouteStrategy),
                          ("r2r", R2RStrategy), ("single", SingleModel)):  # fmt: skip
        reg.register(name, factory)
    return reg
