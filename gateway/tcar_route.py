"""A route of kind ``tcar``: a router LLM picks agents, they answer in parallel, a refining route merges the answers.

:class:`TcarBackend` serves the route as a backend (like ``collab_backend``), so the request pipeline, limits and
logging treat it as one. Per request it

1. lists the agents the caller sees (``gateway.storage.agents``: the caller's key's own and the global ones, read
   at request time, so agents added or removed through ``/v1/agents`` count at once, without restart or retraining)
   whose route is still served;
2. sends the TCAR prompt (``routers.tcar.build_prompt``) to ``router_route`` through the normal dispatch
   (non-streaming, temperature 0) and parses the answer (``routers.tcar.parse``);
3. when the answer is unusable — or the router route fails — falls back to description-embedding similarity
   (``routers.tcar.fallback`` over all-MiniLM-L6-v2 embeddings of the last user message and of each agent's
   ``name: description``), records ``"fallback": "embedding"`` in the decision and logs a warning;
4. when the decision is ``oos`` (or no agent is visible, or none is similar enough in the fallback) answers
   :data:`OOS_MESSAGE` without calling any agent;
5. calls the chosen agents' routes in parallel (``asyncio.gather``, non-streaming, the client's conversation and
   sampling settings); agents that fail are left out (all failing fails the request);
6. streams ``refine_route``'s answer to the refine prompt (``routers.tcar.refine_prompt``) — always, even for one
   agent, so the reply has one voice.

The last event carries every backend's token counts (``counts_by_model``: router, agents, refiner; priced by the
pipeline with each backend's price, so one log row holds the whole request's usage) and the decision
(``decision``), which the pipeline adds to the request's routing decisions. The caller's key arrives with the request
(``ChatRequest.caller_key_id``, set by the pipeline from the request's API key; None: no key, the global agents only).

Route ``params`` read here: ``fallback_threshold`` (cosine, default ``routers.tcar.DEFAULT_THRESHOLD``) and
``router_max_tokens`` (default 256).

What it leaves out: budget reservations for the whole fan-out (the pipeline reserves for the route's own zero
price; the actual cost is settled afterwards), tools, logprobs and n > 1, cooldown bookkeeping for inner calls,
streaming the agents' answers, and routes of kind ``tcar`` as agents (refused, no recursion).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.backends.base import Backend, ChatRequest, ChatResult, StreamEvent, TokenCounts
from gateway.dispatch import Attempted, BackendRoute, RouteTable, call_whole, open_stream
from gateway.errors import BackendError, TandemError
from gateway.usage import Price
from routers.base import RouteQuery
from routers.tcar import DEFAULT_THRESHOLD, OOS, build_prompt, cosine_scores, fallback, parse, refine_prompt

if TYPE_CHECKING:
    from gateway.storage.agents import Agent, AgentStore

log = logging.getLogger("tandem")

OOS_MESSAGE = ("This request is outside the scope of the agents available here, so no agent answered it. "
               "Please rephrase it or ask about something the listed agents cover (GET /v1/agents).")
ROUTER_OUTPUT_CHARS = 2000  # how much of the router's raw answer the decision keeps

Embed = Callable[[Sequence[str]], np.ndarray]


def agent_text(agent: Agent) -> str:
    """What the embedding fallback compares the query to."""
    return f"{agent.name}: {agent.description}"


class TcarBackend(Backend):
    """The ``tcar`` route's orchestration, served as a backend (price zero: inner calls are priced per backend)."""

    kind = "tcar"

    def __init__(self, name: str, router_route: str, refine_route: str, max_agents: int,
                 agents: AgentStore | None, embed: Embed, params: dict[str, Any] | None = None):
        super().__init__(name, Price(), frozenset())
        params = dict(params or {})
        self.router_route, self.refine_route = router_route, refine_route
        self.max_agents = max(1, min(3, int(max_agents)))
        self.store = agents
        self.threshold = float(params.get("fallback_threshold", DEFAULT_THRESHOLD))
        self.router_max_tokens = int(params.get("router_max_tokens", 256))
        self.embed: Embed = embed  # texts → L2-normalised vectors (the fallback's similarity)
        self.table: RouteTable | None = None

    def bind(self, table: RouteTable) -> None:
        """The route table the inner calls go through (set once the table exists)."""
        self.table = table

    # ---- pieces ------------------------------------------------------------------------------------------------

    async def visible_agents(self, caller_key_id: str | None) -> list[Agent]:
        """The agents of the key ``caller_key_id`` (None: no key) and the global ones whose route is served here (and
        is not itself a TCAR route)."""
        if self.store is None or self.table is None:
            return []
        agents = await asyncio.to_thread(self.store.list, caller_key_id)
        routes = self.table.routes
        return [a for a in agents if a.route in routes and routes[a.route].kind != "tcar"]

    async def _call(self, route_name: str, req: ChatRequest) -> tuple[ChatResult, Attempted]:
        table = self.table
        assert table is not None, "TcarBackend used before bind()"
        route, routed = await table.select(table.resolve(route_name), RouteQuery.from_messages(req.messages))
        res, att, _secs = await call_whole(table, route, req, then=RouteTable.router_fallbacks(routed))
        return res, att

    @staticmethod
    def _count(acc: dict[str, TokenCounts], backend: str, counts: TokenCounts | None,
               by_model: dict[str, TokenCounts] | None) -> None:
        for name, c in (by_model or ({backend: counts} if counts is not None else {})).items():
            cur = acc.setdefault(name, TokenCounts())
            cur.prompt_tokens += c.prompt_tokens
            cur.completion_tokens += c.completion_tokens
            cur.cached_tokens += c.cached_tokens

    async def _embedding_choice(self, req: ChatRequest, agents: list[Agent]) -> tuple[list[str], dict[str, float]]:
        query = RouteQuery.from_messages(req.messages).prompt
        vecs = await asyncio.to_thread(self.embed, [query] + [agent_text(a) for a in agents])
        table = {a.id: vecs[i + 1] for i, a in enumerate(agents)}
        scores = cosine_scores(vecs[0], table)
        return fallback(vecs[0], table, self.max_agents, self.threshold), {k: round(v, 4) for k, v in scores.items()}

    async def decide(self, req: ChatRequest, agents: list[Agent], acc: dict[str, TokenCounts]
                     ) -> tuple[list[Agent] | None, dict[str, Any]]:
        """Ask the router route (falling back to embeddings); returns the chosen agents (None: out of scope) and
        the decision to log."""
        d: dict[str, Any] = {"route": self.name, "kind": "tcar", "router": self.router_route,
                             "refine": self.refine_route, "agents_visible": len(agents)}
        if not agents:
            d.update(chosen=OOS, reason="no agents are visible to this caller; out of scope")
            return None, d
        by_id = {a.id: a for a in agents}
        t0 = time.perf_counter()
        router_req = ChatRequest(messages=build_prompt(agents, req.messages), max_tokens=self.router_max_tokens,
                                 temperature=0.0, seed=req.seed, caller_key_id=req.caller_key_id)
        parsed, why = None, ""
        try:
            res, att = await self._call(self.router_route, router_req)
            self._count(acc, att.route.backend.name, res.counts, res.counts_by_model)
            text = res.message.get("content") or ""
            d["router_output"] = text[:ROUTER_OUTPUT_CHARS]
            parsed = parse(text, list(by_id), self.max_agents)
            why = "router output unparseable"
        except TandemError as e:
            why = f"router route failed ({type(e).__name__}: {e.message})"
        d["router_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        if parsed is not None:
            reason, ids = parsed
            d.update(chosen=ids, reason=f"router: {reason}" if reason else "router gave no reason")
            return (None if ids == OOS else [by_id[i] for i in ids]), d
        t1 = time.perf_counter()
        ids, scores = await self._embedding_choice(req, agents)
        d.update(fallback="embedding", scores=scores, chosen=ids or OOS, threshold=self.threshold,
                 fallback_ms=round((time.perf_counter() - t1) * 1000.0, 3),
                 reason=f"{why}; description-embedding fallback" + ("" if ids else ": nothing similar, out of scope"))
        log.warning("tcar route %s: %s; embedding fallback chose %s", self.name, why, ids or OOS)
        return ([by_id[i] for i in ids] or None), d

    async def answers(self, req: ChatRequest, chosen: list[Agent], acc: dict[str, TokenCounts],
                      d: dict[str, Any]) -> list[tuple[str, str]]:
        """The chosen agents' answers, called in parallel; failures are recorded and left out."""
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self._call(a.route, replace(req)) for a in chosen), return_exceptions=True)
        d["agents_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        out: list[tuple[str, str]] = []
        failures: list[str] = []
        first_error: BaseException | None = None
        for a, r in zip(chosen, results, strict=True):
            if isinstance(r, BaseException):
                if not isinstance(r, Exception):
                    raise r  # cancellation
                first_error = first_error or r
                failures.append(f"{a.id}: {r}")
                continue
            res, att = r
            self._count(acc, att.route.backend.name, res.counts, res.counts_by_model)
            out.append((a.name, res.message.get("content") or ""))
        d["agents"] = [{"id": a.id, "name": a.name, "route": a.route} for a in chosen]
        if failures:
            d["agent_failures"] = failures
        if not out:
            raise first_error if isinstance(first_error, TandemError) else BackendError(
                f"tcar route '{self.name}': every chosen agent failed ({'; '.join(failures)})")
        return out

    # ---- the backend -------------------------------------------------------------------------------------------

    async def stream_chat(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        acc: dict[str, TokenCounts] = {}
        agents = await self.visible_agents(req.caller_key_id)
        chosen, d = await self.decide(req, agents, acc)
        if chosen is None:
            yield StreamEvent(delta={"role": "assistant"})
            yield StreamEvent(delta={"content": OOS_MESSAGE}, finish_reason="stop")
            yield StreamEvent(counts_by_model=acc or None, decision=d)
            return
        answers = await self.answers(req, chosen, acc, d)
        table = self.table
        assert table is not None
        refine_req = replace(req, messages=refine_prompt(req.messages, answers))
        route, routed = await table.select(table.resolve(self.refine_route),
                                           RouteQuery.from_messages(refine_req.messages))
        first, rest, att, _secs = await open_stream(table, route, refine_req, then=RouteTable.router_fallbacks(routed))
        assert isinstance(att.route, BackendRoute)
        refiner = att.route.backend.name
        d["refined_by"] = refiner
        try:
            ev = first
            while ev is not None:
                if ev.counts is not None or ev.counts_by_model:
                    self._count(acc, refiner, ev.counts, ev.counts_by_model)
                    ev = replace(ev, counts=None, counts_by_model=None)
                if ev.delta is not None or ev.finish_reason is not None or ev.text is not None or ev.logprobs:
                    yield ev
                try:
                    ev = await rest.__anext__()
                except StopAsyncIteration:
                    ev = None
        finally:
            await rest.aclose()
        yield StreamEvent(counts_by_model=acc or None, decision=d)

    async def chat(self, req: ChatRequest) -> ChatResult:
        content: list[str] = []
        finish, by_model, decision = None, None, None
        async for ev in self.stream_chat(req):
            if ev.delta and ev.delta.get("content"):
                content.append(ev.delta["content"])
            finish = ev.finish_reason or finish
            by_model = ev.counts_by_model or by_model
            decision = ev.decision or decision
        total = TokenCounts(sum(c.prompt_tokens for c in (by_model or {}).values()),
                            sum(c.completion_tokens for c in (by_model or {}).values()))
        return ChatResult({"role": "assistant", "content": "".join(content)}, finish, total, None, self.name,
                          by_model, None, decision)
