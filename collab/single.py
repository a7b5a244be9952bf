"""The one-model baseline as a strategy: a single model writes the whole answer (draft-only / target-only / SLM-only).

In process it picks each token from the model's logits through ``logit_kernels.combine``; a remote model writes chunks of
``chunk`` tokens per ``complete_ids`` call. It takes no router file (``build_from_artifact`` with one is an error).
What it leaves out: any collaboration (that is the point of a baseline).
"""

from __future__ import annotations

from collab.session import Session
from collab.strategy import CollabStrategy


class SingleModel(CollabStrategy):
    """Every token from ``model``."""

    name = "single"

    def __init__(self, model: str, *, chunk: int = 16):
        self.model = model
        self.chunk = chunk

    async def advance(self, session: Session, budget: int) -> None:
        m = session.member(self.model)
        if m.in_process:
            tok, _ = await session.next_token(self.model)
            session.append(tok, self.model)
            return
        out = await session.complete(self.model, min(self.chunk, budget), stop_ids=sorted(session.stop_ids))
        for step in out.steps:
            session.append(step.token_id, self.model)
            if session.done:
                break
