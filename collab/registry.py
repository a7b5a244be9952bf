"""The strategy interface (:class:`CollabStrategy`) and a registry of strategies by name.

A strategy has one job: :meth:`CollabStrategy.advance` appends one or more tokens to a :class:`~collab.session.Session`
(each with the model that wrote it). The base class turns that into a stream (:meth:`CollabStrategy.generate`, async
iterator of ``Emitted(token_id, text, model)``) and a one-shot run (:meth:`CollabStrategy.run`), which is what the
gateway serves as a ``collab`` route. What it leaves out: building the session's models (the caller brings them) and
loading trained routers (each strategy module's ``load``).
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


_REGISTRY: dict[str, Callable[..., CollabStrategy]] = {}


def register(name: str) -> Callable[[Callable[..., CollabStrategy]], Callable[..., CollabStrategy]]:
    """Class decorator: make a strategy buildable by ``build(name, ...)``."""
    def deco(factory: Callable[..., CollabStrategy]) -> Callable[..., CollabStrategy]:
        _REGISTRY[name] = factory
        return factory
    return deco


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def build(name: str, **kwargs: Any) -> CollabStrategy:
    """A strategy by name (``r2r``, ``fusionroute``, ``arbitrage``, ``single``) with its constructor arguments."""
    _load_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown collab strategy '{name}' (have {sorted(_REGISTRY)})") from None
    return factory(**kwargs)


def _load_builtins() -> None:
    import collab.arbitrage  # noqa: F401
    import collab.fusionroute  # noqa: F401
    import collab.r2r  # noqa: F401
    import collab.single  # noqa: F401


def build_from_artifact(name: str, artifact: str | None = None, **kwargs: Any) -> CollabStrategy:
    """A strategy by name with its trained router loaded from ``artifact`` (``tandem train NAME --out FILE``).
    The artifact's calibrated threshold is used unless ``tau`` is given. Without an artifact: ``build``."""
    if artifact is not None:
        if name == "r2r":
            from collab.r2r import R2RRouter

            router, meta = R2RRouter.load(artifact)
        elif name == "arbitrage":
            from collab.arbitrage import StepRouter

            router, meta = StepRouter.load(artifact)
        else:
            raise ValueError(f"strategy '{name}' takes no router artifact here")
        kwargs.setdefault("router", router)
        if meta.get("tau") is not None:
            kwargs.setdefault("tau", float(meta["tau"]))
    return build(name, **kwargs)
