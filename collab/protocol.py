"""The token-level protocol collaboration needs from a model: ids in, tokens with top-k logprobs (or logits) out.

``collab`` owns this interface; ``gateway.backends`` implement it (a vLLM server through ``/v1/completions`` with
token-id prompts, an in-process model through its forward pass). Nothing here does I/O. What it leaves out: chat
formatting (a collaboration receives already-tokenized prompts) and pricing (the backend knows its price).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass
class TokenStep:
    """One generated token: its id, its logprob, and the top-k alternatives as (id, logprob), best first."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class IdCompletion:
    """What a model wrote after a token-id prompt."""

    steps: list[TokenStep]
    finish_reason: str  # "stop" (a stop id or EOS) or "length"
    prompt_tokens: int
    cached_tokens: int = 0

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]


@runtime_checkable
class TokenModel(Protocol):
    """A model that continues token-id prompts and reports top-k logprobs per position."""

    name: str

    async def complete_ids(
        self,
        ids: list[int],
        max_tokens: int,
        *,
        stop_ids: list[int] | None = None,
        top_logprobs: int = 0,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> IdCompletion: ...


@runtime_checkable
class LogitModel(TokenModel, Protocol):
    """An in-process model that also gives the full next-token logits for a prefix (reusing its KV cache)."""

    def next_logits(self, ids: list[int]) -> torch.Tensor:  # shape [V], float32
        ...
