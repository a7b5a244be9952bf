"""The token-level collaboration runtime: one answer written by several models that share a tokenizer.

A :class:`Session` holds the prompt, the tokens written so far with their provenance (which model wrote each), and
one :class:`Member` per model with its usage. Two transports, picked per model:

- **in process** (a ``collab.protocol.LogitModel``: it has ``next_logits``): full next-token logits on the
  session's current ids. The model keeps one KV cache; a model that skipped tokens (another model wrote them) catches
  up lazily on its next call — only the missing tokens run. ``next_state`` (logits and last hidden state, a
  ``StatefulModel``) is used where the model offers it, and the awaitable ``anext_state`` / ``anext_logits``
  (``AsyncStatefulModel`` / ``AsyncLogitModel``) where it has them; otherwise the blocking call runs in a worker thread.
- **remote** (only ``complete_ids``, e.g. vLLM over HTTP): chunked drafting with top-k logprobs and one-token
  continuations, both on token-id prompts that the server's prefix cache mostly holds already; a
  ``StreamingTokenModel`` also streams (:meth:`Member.stream`), and closing the stream cancels the server's request.
  Every remote call and stream leaves a ``collab.timeline.CallTiming`` (:meth:`Session.timeline`), and
  :meth:`Session.close` stops what a strategy left running (:meth:`Session.on_close`).

Every token choice from logits goes through ``logit_kernels.combine`` (:meth:`Session.pick`); a remote model's own sampled
token is taken as it is. ``state_sync`` lets a strategy run several in-process positions in one worker thread.
Usage per model follows the OpenAI convention per call: ``prompt_tokens`` is the whole
context sent (cached included), ``cached_tokens`` the part reused from the model's cache (in process: the session's
view of what the model's KV cache holds; remote: what the server reports), ``completion_tokens`` the positions the
model decoded (kept or not), ``written_tokens`` the answer tokens attributed to it, ``calls`` its model calls.

What it leaves out: strategies (``collab.r2r``, ``collab.fusionroute``, ``collab.arbitrage``), batching several
sessions, tokenizing prompts, and chat formatting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch

import logit_kernels
from collab.protocol import (
    AsyncLogitModel,
    AsyncStatefulModel,
    IdCompletion,
    LogitModel,
    StatefulModel,
    StreamEnd,
    StreamingTokenModel,
    TokenModel,
    TokenStep,
)
from collab.timeline import CallTiming


@dataclass
class ModelUsage:
    """One model's usage in a session (see the module docstring for the meaning of each count)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    written_tokens: int = 0
    calls: int = 0

    @property
    def prefill_tokens(self) -> int:
        """Input tokens the model actually had to run (not cached)."""
        return self.prompt_tokens - self.cached_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "prefill_tokens": self.prefill_tokens, "completion_tokens": self.completion_tokens,
                "written_tokens": self.written_tokens, "calls": self.calls}


class Emitted(NamedTuple):
    """One answer token as streamed: its id, its text piece (may be empty) and the model that wrote it."""

    token_id: int
    text: str
    model: str


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case (one sequence extends the other): one comparison, no Python loop
        return n
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Member:
    """One model in a session: its transport and its usage."""

    def __init__(self, name: str, model: TokenModel):
        self.name = name
        self.model = model
        self.in_process = isinstance(model, LogitModel)
        self.has_state = isinstance(model, StatefulModel)
        # the awaitable form of the call state() makes (else the blocking one runs in a worker thread)
        self.awaitable = isinstance(model, AsyncStatefulModel if self.has_state else AsyncLogitModel)
        self.usage = ModelUsage()
        self.streams = isinstance(model, StreamingTokenModel)  # remote and can stream (and cancel) a continuation
        self.calls: list[CallTiming] = []  # one per remote call or stream (collab.timeline)
        self._seen: list[int] = []  # ids this model's cache holds, as far as this session knows

    def _count_context(self, ids: list[int]) -> None:
        reused = min(common_prefix(self._seen, ids), len(ids) - 1) if self._seen else 0
        self.usage.prompt_tokens += len(ids)
        self.usage.cached_tokens += max(reused, 0)
        self.usage.completion_tokens += 1
        self.usage.calls += 1
        self._seen = list(ids)

    async def state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """In process: next-token logits ``[V]`` (float32, CPU) and the hidden state if the model gives it."""
        if not self.in_process:
            raise TypeError(f"model '{self.name}' is remote: it has no logits")
        if not self.awaitable:  # a blocking model: in a worker thread
            return await asyncio.to_thread(self.state_sync, ids)
        self._count_context(ids)
        if self.has_state:
            logits, hidden = await cast(AsyncStatefulModel, self.model).anext_state(ids)
            return logits.float().cpu(), hidden.float().cpu()
        return (await cast(AsyncLogitModel, self.model).anext_logits(ids)).float().cpu(), None

    def state_sync(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`state` of a blocking model, called directly: a strategy may run several positions in one worker
        thread (one thread hop per chunk instead of one per token; the model calls and their order are the same)."""
        if not self.in_process:
            raise TypeError(f"model '{self.name}' is remote: it has no logits")
        self._count_context(ids)
        if self.has_state:
            logits, hidden = cast(StatefulModel, self.model).next_state(ids)
            return logits.float().cpu(), hidden.float().cpu()
        return cast(LogitModel, self.model).next_logits(ids).float().cpu(), None

    async def logits(self, ids: list[int]) -> torch.Tensor:
        return (await self.state(ids))[0]

    async def complete(self, ids: list[int], max_tokens: int, *, top_logprobs: int = 0, stop_ids: list[int] | None = None,
                       temperature: float = 0.0, seed: int | None = None) -> IdCompletion:
        """A ``complete_ids`` call; usage from what the model reports."""
        timing = CallTiming(self.name, time.perf_counter(), len(ids))
        self.calls.append(timing)
        out = await self.model.complete_ids(list(ids), max_tokens, stop_ids=stop_ids, top_logprobs=top_logprobs,
                                            temperature=temperature, seed=seed)
        timing.end, timing.tokens = time.perf_counter(), len(out.steps)
        self.usage.prompt_tokens += out.prompt_tokens or len(ids)
        self.usage.cached_tokens += out.cached_tokens
        self.usage.completion_tokens += len(out.steps)
        self.usage.calls += 1
        self._seen = list(ids) + out.token_ids
        return out

    async def stream(self, ids: list[int], max_tokens: int, *, top_logprobs: int = 0,
                     stop_ids: list[int] | None = None, temperature: float = 0.0, seed: int | None = None
                     ) -> AsyncGenerator[TokenStep, None]:
        """A ``stream_ids`` call (a ``StreamingTokenModel``): its steps as they arrive. Closing it early cancels the
        server's request. Usage: ``prompt_tokens`` the context sent, ``cached_tokens`` what the server reports (only
        a stream that runs to its end reports it), ``completion_tokens`` the steps received."""
        if not self.streams:
            raise TypeError(f"model '{self.name}' cannot stream token ids")
        timing = CallTiming(self.name, time.perf_counter(), len(ids), kind="stream", cancelled=True)
        self.calls.append(timing)
        self.usage.prompt_tokens += len(ids)
        self.usage.calls += 1
        gen = cast(StreamingTokenModel, self.model).stream_ids(
            list(ids), max_tokens, stop_ids=stop_ids, top_logprobs=top_logprobs, temperature=temperature, seed=seed)
        try:
            async for item in gen:
                if isinstance(item, StreamEnd):
                    self.usage.cached_tokens += item.cached_tokens
                    timing.cancelled = False
                    continue
                if timing.first is None:
                    timing.first = time.perf_counter()
                timing.tokens += 1
                self.usage.completion_tokens += 1
                yield item
        finally:
            timing.end = time.perf_counter()
            await gen.aclose()


def position_seed(seed: int, position: int) -> int:
    """The ``logit_kernels.combine`` sampling seed for one answer position (same seed and position → same draw)."""
    return (seed * 1_000_003 + position) & 0xFFFFFFFF


class Session:
    """One collaborative generation: prompt, answer tokens with provenance, members with usage."""

    def __init__(self, models: Mapping[str, TokenModel] | Iterable[TokenModel], prompt_ids: Sequence[int], *,
                 stop_ids: Iterable[int] = (), decode: Callable[[list[int]], str] | None = None,
                 temperature: float = 0.0, seed: int = 0):
        pairs = models.items() if isinstance(models, Mapping) else ((m.name, m) for m in models)
        self.members: dict[str, Member] = {n: Member(n, m) for n, m in pairs}
        if not self.members:
            raise ValueError("a session needs at least one model")
        if not prompt_ids:
            raise ValueError("the prompt must not be empty")
        self.prompt_ids = list(prompt_ids)
        self.output: list[int] = []
        self.provenance: list[str] = []
        self.stop_ids = set(stop_ids)
        self.decode = decode
        self.temperature = temperature
        self.seed = seed
        self.finish_reason: str | None = None
        self.scratch: dict[str, Any] = {}  # per-session state a strategy keeps between advance() calls
        self._closers: list[Callable[[], None]] = []
        self._text = ""

    # ---- state -----------------------------------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.output

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        return self._text

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise KeyError(f"no model '{name}' in this session (have {sorted(self.members)})") from None

    def usage(self) -> dict[str, ModelUsage]:
        return {n: m.usage for n, m in self.members.items()}

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the session is closed (a strategy stops the streams it left running)."""
        self._closers.append(fn)

    def close(self) -> None:
        """Stop whatever the session's strategy still runs (streams in flight); safe to call twice."""
        closers, self._closers = self._closers, []
        for fn in closers:
            fn()

    def timeline(self) -> list[CallTiming]:
        """Every remote call and stream of the session, in start order (``collab.timeline.wall_split`` reads it)."""
        return sorted((c for m in self.members.values() for c in m.calls), key=lambda c: c.start)

    def append(self, token_id: int, model: str) -> Emitted:
        """Add one answer token written by ``model``; returns it with its text piece."""
        if self.done:
            raise RuntimeError("the session is finished")
        self.member(model).usage.written_tokens += 1
        self.output.append(int(token_id))
        self.provenance.append(model)
        piece = ""
        if self.decode is not None:
            full = self.decode(self.output)
            if not full.endswith("\ufffd"):
                piece, self._text = full[len(self._text):], full
        if token_id in self.stop_ids:
            self.finish_reason = "stop"
        return Emitted(int(token_id), piece, model)

    # ---- model calls -----------------------------------------------------------------------------------------

    async def state(self, name: str, ids: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return await self.member(name).state(self.ids if ids is None else ids)

    def state_sync(self, name: str, ids: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blocking :meth:`state` (call it from a worker thread, see :meth:`Member.state_sync`)."""
        return self.member(name).state_sync(self.ids if ids is None else ids)

    async def logits(self, name: str, ids: list[int] | None = None) -> torch.Tensor:
        return await self.member(name).logits(self.ids if ids is None else ids)

    async def complete(self, name: str, max_tokens: int, *, ids: list[int] | None = None, top_logprobs: int = 0,
                       stop_ids: list[int] | None = None) -> IdCompletion:
        ids = self.ids if ids is None else ids
        return await self.member(name).complete(ids, max_tokens, top_logprobs=top_logprobs, stop_ids=stop_ids,
                                                temperature=self.temperature,
                                                seed=position_seed(self.seed, len(ids)) if self.temperature else None)

    def stream(self, name: str, max_tokens: int, *, ids: list[int] | None = None, top_logprobs: int = 0,
               stop_ids: list[int] | None = None) -> AsyncGenerator[TokenStep, None]:
        """:meth:`Member.stream` on the session's ids (or ``ids``) with the session's sampling settings."""
        ids = self.ids if ids is None else ids
        return self.member(name).stream(ids, max_tokens, top_logprobs=top_logprobs, stop_ids=stop_ids,
                                        temperature=self.temperature,
                                        seed=position_seed(self.seed, len(ids)) if self.temperature else None)

    def pick(self, logits: Sequence[torch.Tensor] | Sequence[logit_kernels.TopK], weights: Sequence[float] | None = None,
             *, position: int | None = None) -> int:
        """Choose one token from one or more models' scores through ``logit_kernels.combine`` (greedy at temperature 0,
        else a seeded draw; the seed depends on the answer position)."""
        w = [1.0] * len(logits) if weights is None else list(weights)
        pos = len(self.output) if position is None else position
        mode = "sample" if self.temperature > 0 else "greedy"
        temp = self.temperature if self.temperature > 0 else 1.0
        if isinstance(logits[0], torch.Tensor):
            x = torch.stack([t.float().reshape(1, -1) for t in logits])  # type: ignore[union-attr]
            res = logit_kernels.combine(x, w, temperature=temp, mode=mode, seed=position_seed(self.seed, pos))
        else:
            res = logit_kernels.combine(list(logits), w, temperature=temp, mode=mode,  # type: ignore[arg-type]
                                  seed=position_seed(self.seed, pos))
        tok = int(res.token_ids[0])
        if tok < 0:
            raise RuntimeError("every token is masked")
        return tok

    async def next_token(self, name: str, ids: list[int] | None = None, *, top_logprobs: int = 0
                         ) -> tuple[int, torch.Tensor | None]:
        """One next token from ``name`` alone: in process via its logits (returned too), remote via a one-token
        ``complete_ids`` call (logits ``None``)."""
        m = self.member(name)
        ids = self.ids if ids is None else ids
        if m.in_process:
            logits = await m.logits(ids)
            return self.pick([logits], position=len(ids) - len(self.prompt_ids)), logits
        out = await self.complete(name, 1, ids=ids, top_logprobs=top_logprobs)
        return out.steps[0].token_id, None


def topk_of(logprobs_or_top: torch.Tensor | Sequence[tuple[int, float]], k: int | None = None) -> logit_kernels.TopK:
    """A one-row ``logit_kernels.TopK`` from full logits (its top ``k`` log-softmax values) or from (id, logprob) pairs."""
    if isinstance(logprobs_or_top, torch.Tensor):
        lps = torch.log_softmax(logprobs_or_top.float(), -1)
        v, i = torch.topk(lps, min(k or lps.numel(), lps.numel()))
        return logit_kernels.TopK(ids=i.reshape(1, -1).long(), logprobs=v.reshape(1, -1))
    pairs = list(logprobs_or_top)[: k or None]
    return logit_kernels.TopK(ids=torch.tensor([[i for i, _ in pairs]], dtype=torch.long),
                        logprobs=torch.tensor([[v for _, v in pairs]], dtype=torch.float32))


@dataclass
class Generation:
    """A finished collaboration: the answer, provenance, usage and finish reason."""

    output: list[int]
    provenance: list[str]
    usage: dict[str, ModelUsage]
    finish_reason: str
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def share(self, model: str) -> float:
        """Fraction of answer tokens written by ``model``."""
        return self.provenance.count(model) / len(self.provenance) if self.provenance else 0.0
