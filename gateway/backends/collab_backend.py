"""A collaboration served as a backend: several member backends write one answer together (``collab`` package).

:class:`CollabBackend` formats the chat with the members' shared tokenizer, runs a ``collab`` strategy (R2R,
Arbitrage, FusionRoute, single) in a :class:`collab.session.Session` over the member backends (in-process models give
logits; vLLM servers give top-k logprobs), and streams each piece with the member that wrote it; the last event's ``decision`` says what the collaboration did
(tokens and calls per member, the strategy's counts, the wall-time split of its remote calls). Its own price is
zero: the final event reports each member's counts, and the gateway prices them with the members' prices.

The strategy's arguments are ``roles`` and ``params`` as given: a process reward for Arbitrage arrives resolved (a
step scorer or a ``collab.protocol.ProcessReward``; whoever builds the route resolves a name such as ``suite:…``).

What it leaves out: the strategies themselves (``collab``) and their training (``evals.collab_train``), tools,
logprobs and n > 1.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from collab.protocol import StatefulModel
from gateway.backends.base import Backend, ChatRequest, StreamEvent, TokenCounts
from gateway.errors import ConfigError, InvalidRequest, PromptTooLarge
from gateway.usage import Price

if TYPE_CHECKING:
    from collab.registry import StrategyRegistry
    from collab.strategy import CollabStrategy


@runtime_checkable
class HasTokenizer(Protocol):
    """A member backend that names its tokenizer: a loaded HF tokenizer, a tokenizer folder, or None (not loaded or
    not configured), e.g. ``LocalBackend`` (once loaded) and ``OpenAIHTTPBackend`` (its ``tokenizer`` setting)."""

    tokenizer: Any


def shared_tokenizer(members: dict[str, Backend], tokenizer_path: str | None) -> Any:
    """The tokenizer every member shares: an explicit path, else the first member that holds one."""
    if tokenizer_path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer_path)
    for b in members.values():
        tok = b.tokenizer if isinstance(b, HasTokenizer) else None
        if tok is not None and not isinstance(tok, str):
            return tok
        if isinstance(tok, str):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(tok)
    raise ValueError("no member has a tokenizer: set 'tokenizer' on the collab route or a member backend")


def collab_decision(strategy: str, session: Any, t0: float, t1: float, cpu_s: float = 0.0) -> dict[str, Any]:
    """What the collaboration did, logged with the request and returned in ``tandem.decision.routers``: answer
    tokens per model, calls per model, the strategy's own counts (``session.scratch["stats"]``) and where the wall
    time went (``collab.timeline.wall_split`` of the members' remote calls, plus ``cpu_s``: the gateway process's CPU
    time meanwhile — every request it served in that time, so one request at a time for a clean number)."""
    from collab.timeline import wall_split

    usage = session.usage()
    written = {m: u.written_tokens for m, u in usage.items() if u.written_tokens}
    calls = {m: u.calls for m, u in usage.items() if u.calls}
    n = len(session.output)
    return {"kind": "collab", "reason": f"{strategy}: " + ", ".join(f"{m} wrote {c}" for m, c in written.items()),
            "collab": {"strategy": strategy, "tokens": n, "written": written, "calls": calls,
                       "calls_per_token": sum(calls.values()) / n if n else 0.0,
                       "stats": dict(session.scratch.get("stats") or {}),
                       "timing": {**wall_split(session.timeline(), t0, t1), "cpu_s": cpu_s}}}


class CollabBackend(Backend):
    kind = "collab"

    def __init__(self, name: str, strategy: str, members: dict[str, Backend], roles: dict[str, Any],
                 strategies: StrategyRegistry, artifact: str | None = None, params: dict[str, Any] | None = None,
                 tokenizer: str | None = None, max_context: int = 2048):
        super().__init__(name, Price(), frozenset())
        self.strategy_name = strategy
        self.members = members
        self.roles = roles
        self.params = dict(params or {})
        self.artifact = artifact
        self.max_context = max_context
        self.tokenizer = shared_tokenizer(members, tokenizer)
        self._build = strategies.build_from_artifact
        self._check = self._new_strategy()  # fail at start, not per request, on a bad artifact or role
        for m in self._check.stateful_members():
            if not isinstance(members.get(m), StatefulModel):
                raise ConfigError(f"collab route '{name}': its {strategy} router reads the hidden state of '{m}', "
                                  "which only an in-process (kind: local) backend gives", param="artifact")

    def _new_strategy(self) -> CollabStrategy:
        return self._build(self.strategy_name, self.artifact, **self.roles, **self.params)

    def _prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5: a BatchEncoding (return_dict)
            ids = ids["input_ids"]
        return list(ids)

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        from collab.session import Session

        if req.stop:
            raise InvalidRequest(f"route '{self.name}' (a collaboration) does not support 'stop'", param="stop")
        ids = self._prompt_ids(req.messages)
        max_tokens = req.max_tokens or 256
        if len(ids) + max_tokens > self.max_context:
            raise PromptTooLarge(f"prompt of {len(ids)} tokens + max_tokens {max_tokens} exceeds this collaboration's "
                                 f"context of {self.max_context}", param="messages")
        tok = self.tokenizer
        stops = {t for t in (tok.eos_token_id, getattr(tok, "pad_token_id", None)) if t is not None}
        session = Session(self.members, ids, stop_ids=stops,
                          decode=lambda t: tok.decode(t, skip_special_tokens=True),
                          temperature=req.temperature or 0.0, seed=req.seed or 0)
        strategy = self._new_strategy()
        t0, cpu0 = time.perf_counter(), time.process_time()
        yield StreamEvent(delta={"role": "assistant"})
        try:
            async for em in strategy.generate(session, max_tokens):
                if em.text:
                    yield StreamEvent(delta={"content": em.text}, model=em.model)
        finally:
            session.close()  # streams a strategy left running (remote members) are cancelled
        t1, cpu = time.perf_counter(), time.process_time() - cpu0
        by_model = {name: TokenCounts(u.prompt_tokens, u.completion_tokens, u.cached_tokens)
                    for name, u in session.usage().items() if u.calls or u.completion_tokens}
        finish = "stop" if session.finish_reason == "stop" else "length"
        yield StreamEvent(delta={}, finish_reason=finish, counts_by_model=by_model or None,
                          counts=TokenCounts(len(ids), len(session.output)),
                          decision=collab_decision(self.strategy_name, session, t0, t1, cpu))

    async def health(self) -> bool:
        return all([await b.health() for b in self.members.values()])
