"""The token-level protocol collaboration needs from a model: ids in, tokens with top-k logprobs (or logits) out.

``collab`` owns this interface; ``gateway.backends`` implement it (a vLLM server through ``/v1/completions`` with
token-id prompts, an in-process model through its forward pass). Nothing here does I/O.

Every model is a :class:`TokenModel`; an in-process one is a :class:`LogitModel`. The optional capabilities a model may
add are protocols of their own, checked with ``isinstance``: :class:`StatefulModel` (logits and the last hidden state,
which FusionRoute's router and R2R's hidden-state router need), :class:`AsyncLogitModel` / :class:`AsyncStatefulModel`
(awaitable versions, run without a worker-thread hop by the session), :class:`StreamingTokenModel` (a remote model
that streams its tokens and can be cancelled midway) and :class:`SequenceScorer` (teacher-forced logits for whole
sequences, for one-pass labelling). A step scorer for Arbitrage is a :data:`StepScorer`, or a
:class:`ProcessReward` that gives one per request from its decoded prompt.

What it leaves out: chat formatting (a collaboration receives already-tokenized prompts), pricing (the backend knows
its price) and any concrete process reward (a suite's step checker lives with the suites, in ``evals``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
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


@dataclass
class StreamEnd:
    """The last item of a token stream that ran to its end: why it ended and the server's prompt counts."""

    finish_reason: str  # "stop" or "length"
    prompt_tokens: int = 0
    cached_tokens: int = 0


@runtime_checkable
class StreamingTokenModel(Protocol):
    """A remote model that streams a token-id continuation: each :class:`TokenStep` as the server writes it, then a
    :class:`StreamEnd` if the stream runs to its end. Closing the iterator early (``aclose``) cancels the request on
    the server (it stops decoding), which is how a collaboration stops a draft at its first flagged token."""

    def stream_ids(
        self,
        ids: list[int],
        max_tokens: int,
        *,
        stop_ids: list[int] | None = None,
        top_logprobs: int = 0,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncGenerator[TokenStep | StreamEnd, None]: ...


@runtime_checkable
class LogitModel(TokenModel, Protocol):
    """An in-process model that also gives the full next-token logits for a prefix (reusing its KV cache)."""

    def next_logits(self, ids: list[int]) -> torch.Tensor:  # shape [V], float32
        ...


@runtime_checkable
class StatefulModel(Protocol):
    """A model that gives the next-token logits and the last layer's hidden state for a prefix."""

    def next_state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:  # [V] and [H], float32
        ...


@runtime_checkable
class AsyncLogitModel(Protocol):
    """A model whose next-token logits can be awaited (it runs its forward pass off the event loop itself)."""

    async def anext_logits(self, ids: list[int]) -> torch.Tensor: ...


@runtime_checkable
class AsyncStatefulModel(Protocol):
    """A :class:`StatefulModel` whose logits and hidden state can be awaited."""

    async def anext_state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class SequenceScorer(Protocol):
    """A model that reads whole sequences at once: teacher-forced logits ``[B, T, V]`` and last hidden states
    ``[B, T, H]`` for ids ``[B, T]`` (no cache)."""

    def forward_all(self, ids: torch.Tensor, *, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]: ...


StepScorer = Callable[[list[str], str], float]
"""A process score of one step: ``(prefix_steps, step) -> score`` (higher is better)."""


@runtime_checkable
class ProcessReward(Protocol):
    """A process reward that must see the request first: ``scorer`` binds it to one request's decoded prompt (e.g.
    the task example that prompt asks) and returns the :data:`StepScorer` for that request's steps."""

    def scorer(self, prompt_text: str) -> StepScorer: ...
