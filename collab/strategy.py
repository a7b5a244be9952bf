"""The strategy interface: :class:`CollabStrategy`, what every token-level collaboration strategy implements.

A strategy has one job: :meth:`CollabStrategy.advance` appends one or more tokens to a :class:`~collab.session.Session`
(each with the model that wrote it). The base class turns that into a stream (:meth:`CollabStrategy.generate`, async
iterator of ``Emitted(token_id, text, model)``) and a one-shot run (:meth:`CollabStrategy.run`), which is what the
gateway serves as a ``collab`` route.

A strategy with a trained router also builds itself from its training file: :meth:`CollabStrategy.load_artifact`
reads the file (the registry caches what it returns) and :meth:`CollabStrategy.from_loaded` fills the constructor's
defaults from it (threshold, delimiter, expert order, ...); :meth:`CollabStrategy.from_artifact` does both. The base
class takes no file. What it leaves out: the registry of strategies by name (``collab.registry``), building the
session's models (the caller brings them) and each router's file format (the strategy modules).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
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

    def stateful_members(self) -> tuple[str, ...]:
        """The members whose last hidden state this strategy reads: each must run in process as a
        ``collab.protocol.StatefulModel`` (the gateway refuses a route whose backend does not, at start)."""
        return ()

    # ---- building from a training file ---------------------------------------------------------------------------

    @classmethod
    def load_artifact(cls, path: str | Path) -> Any:
        """Read this strategy's trained router from ``path`` (``tandem train NAME --out FILE``): whatever
        :meth:`from_loaded` takes. A strategy without a router file raises ``ValueError``."""
        raise ValueError(f"strategy '{cls.name}' takes no router artifact")

    @classmethod
    def from_loaded(cls, loaded: Any, **kwargs: Any) -> CollabStrategy:
        """The strategy over what :meth:`load_artifact` read, with the constructor arguments ``kwargs``; arguments
        the file holds (a calibrated threshold, ...) are defaults that ``kwargs`` override."""
        raise ValueError(f"strategy '{cls.name}' takes no router artifact")

    @classmethod
    def from_artifact(cls, path: str | Path, **kwargs: Any) -> CollabStrategy:
        """:meth:`from_loaded` over :meth:`load_artifact` of ``path`` (uncached: the registry caches loaded files)."""
        return cls.from_loaded(cls.load_artifact(path), **kwargs)

    # ---- decoding ----------------------------------------------------------------------------------------------

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
