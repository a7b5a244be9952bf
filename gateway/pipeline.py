"""One request's life: key → limits reserve → route → backend(s) → response → settle → log row → metrics.

:class:`RequestFlow` runs chat and text completions, streamed or not. Whatever happens — a client mistake, a backend
failure, a stream broken midway, a client that disconnects — exactly one request-log row is submitted (with the
partial usage seen so far), the budget reservation is settled or released, and metrics are updated.

The caller's API key id goes into the backend request (``ChatRequest.caller_key_id``), so composite routes (TCAR)
see whose agents to use from their arguments.

What it leaves out: HTTP parsing and error rendering (``gateway.app``), retries and fallbacks (``gateway.dispatch``),
bearer-token parsing (``gateway.auth``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.auth import bearer_token
from gateway.backends.base import ChatRequest, CompletionRequest, StreamEvent
from gateway.cooldown import make_cooldown_store
from gateway.dispatch import Attempted, BackendRoute, RouterRoute, RouteTable, call_whole, open_stream
from gateway.errors import AuthenticationError, InvalidRequest, PromptTooLarge, TandemError
from gateway.limits import KeyLimits, Reservation
from gateway.provenance import runs_for, runs_from_pieces
from gateway.response_cache import HIT, CachedAnswer, Probe, StreamRecorder, replay_events
from gateway.schemas import ChatCompletionRequest, CompletionRequestBody
from gateway.state import Gateway
from gateway.storage.keys import KEY_PREFIX, ApiKey
from gateway.storage.request_log import LogRow
from gateway.tracing import Span, end_request_span, end_router_span
from gateway.usage import Price, Usage, price_usage
from routers.base import RouteQuery


@dataclass
class Flow:
    """Mutable facts about one request, gathered as it runs, written once to the log."""

    request_id: str
    started: float
    endpoint: str
    route: str = ""
    key: ApiKey | None = None
    usage: Usage = field(default_factory=Usage)
    attempted: Attempted | None = None
    reservation: Reservation | None = None
    backend_s: float = 0.0
    ttft_s: float | None = None
    status: str = "ok"
    http_status: int = 200
    error: str | None = None
    prompt: Any = None
    response: str | None = None
    provenance: list[dict[str, str]] | None = None  # which model wrote which part of response (gateway.provenance)
    stream: bool = False
    eval_run: str | None = None  # from the x-tandem-eval-run header: evals are training data too
    routed: list[dict[str, Any]] = field(default_factory=list)  # decisions of the routers on the way
    span: Span | None = None  # the request's trace span (gateway.tracing), from prepare() on
    cache: str | None = None  # response cache: hit | miss | bypass (None: the route does not cache)
    probe: Probe | None = None  # response cache: this request's keys, while it may be stored

    def overhead_ms(self) -> float:
        return max((time.perf_counter() - self.started - self.backend_s) * 1000.0, 0.0)

    def router_fallbacks(self) -> list[str]:
        """Routes the routers on the way would try, in order, if the chosen one fails."""
        return RouteTable.router_fallbacks(self.routed)

    def tandem_object(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "route": self.route,
            "decision": self.decision(),
            "usage": self.usage.to_list(),
            "cost_usd": self.usage.cost_usd,
            "overhead_ms": round(self.overhead_ms(), 3),
        }

    def decision(self) -> dict[str, Any] | None:
        """The decision as returned and logged; with a caching route, ``cache`` says hit, miss or bypass."""
        if self.attempted is None:
            return None
        d = self.attempted.decision(self.route)
        if self.cache is not None:
            d["cache"] = self.cache
        return d

    def headers(self, with_cost: bool = True) -> dict[str, str]:
        h = {"x-request-id": self.request_id, "x-tandem-route": self.attempted.route.name if self.attempted
             else self.route, "x-tandem-overhead-ms": f"{self.overhead_ms():.3f}"}
        if with_cost:
            h["x-tandem-cost-usd"] = f"{self.usage.cost_usd:.10f}"
        if self.cache is not None:
            h["x-tandem-cache"] = self.cache
        if self.attempted is not None and self.attempted.replica is not None:
            h["x-tandem-replica"] = self.attempted.replica["replica"]  # deployments: the backend that answered
        return h


def new_flow(endpoint: str) -> Flow:
    # Random bytes, not uuid4: a new flow is made per request, and the hot path's cost is measured by
    # `python -m bench.gateway_overhead`.
    return Flow(os.urandom(16).hex(), time.perf_counter(), endpoint)


class RequestFlow:
    """Runs requests against one :class:`Gateway`."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.cooldowns = make_cooldown_store(gw.limits)  # shared through the limit store's Redis, if any

    # ---- keys and limits -------------------------------------------------------------------------------------

    async def authenticate(self, flow: Flow, authorization: str | None) -> None:
        token = bearer_token(authorization)
        required = self.gw.cfg.auth.require_keys
        if not token or (not required and not token.startswith(KEY_PREFIX)):
            if required:
                raise AuthenticationError("missing API key: send 'Authorization: Bearer tdm-…'")
            return
        key = await self.gw.lookup_key(token)
        if key is None:
            raise AuthenticationError("invalid or revoked API key")
        flow.key = key

    def _limits(self, flow: Flow) -> KeyLimits | None:
        k = flow.key
        if k is None or (k.budget_usd is None and k.rpm is None and k.tpm is None):
            return None
        return KeyLimits(budget_usd=k.budget_usd, rpm=k.rpm, tpm=k.tpm)

    async def reserve(self, flow: Flow, route: BackendRoute, prompt_tokens: int, max_tokens: int) -> None:
        limits = self._limits(flow)
        if limits is None:
            return
        # Bound the cost by the dearest backend the route may fall back to.
        chain = self.gw.table.chain(route, flow.router_fallbacks()) if self.gw.table else [route]
        est = max(price_usage(v.backend.price, prompt_tokens, max_tokens) for r in chain for v in (r.replicas or (r,)))
        flow.reservation = await self.gw.limits.reserve(flow.key.id, limits, est, prompt_tokens + max_tokens)

    # ---- common ----------------------------------------------------------------------------------------------

    def _check_size(self, req: ChatRequest | CompletionRequest) -> None:
        lim = self.gw.cfg.limits
        if req.max_tokens is not None and req.max_tokens > lim.max_tokens_cap:
            raise InvalidRequest(f"max_tokens: {req.max_tokens} is above this gateway's cap of {lim.max_tokens_cap}",
                                 param="max_tokens")
        chars = len(req.prompt) if isinstance(req, CompletionRequest) and isinstance(req.prompt, str) else (
            len(req.prompt) * 4 if isinstance(req, CompletionRequest) else sum(
                len(orjson.dumps(m.get("content"))) for m in req.messages))
        if chars > lim.max_prompt_chars:
            raise PromptTooLarge(f"prompt is {chars} characters, above the limit of {lim.max_prompt_chars}",
                                 param="messages" if isinstance(req, ChatRequest) else "prompt")

    def _log_prompts(self, flow: Flow) -> bool:
        return self.gw.cfg.storage.log_prompts and (flow.key is None or flow.key.log_prompts)

    async def prepare(self, flow: Flow, body: ChatCompletionRequest | CompletionRequestBody
                      ) -> tuple[BackendRoute, ChatRequest | CompletionRequest]:
        flow.route = body.model
        table = self.gw.table
        requested = table.resolve(body.model)
        flow.route = requested.name if body.model not in ("auto", "default") else body.model
        req = body.to_backend(self.gw.cfg.limits.default_max_tokens)
        if isinstance(req, ChatRequest) and flow.key is not None:
            req.caller_key_id = flow.key.id  # composite routes (TCAR) see whose agents to use
        flow.span = self.gw.tracer.request_span(flow.endpoint, body.model, req, flow.started)
        route = await self._select(flow, requested, req)
        self._check_size(req)
        flow.stream = body.stream
        if self._log_prompts(flow):
            flow.prompt = req.messages if isinstance(req, ChatRequest) else req.prompt
        if isinstance(req, ChatRequest):
            est_prompt = route.backend.estimate_prompt_tokens(req.messages)
        else:
            est_prompt = len(req.prompt) if isinstance(req.prompt, list) else len(req.prompt) // 3 + 1
        await self.reserve(flow, route, est_prompt, req.max_tokens or self.gw.cfg.limits.default_max_tokens)
        # The response cache comes after keys, limits and the budget reservation (gateway.response_cache).
        flow.cache, flow.probe = self.gw.response_cache.probe(flow.endpoint, requested.name,
                                                              flow.key.id if flow.key else None, req)
        return route, req

    async def _select(self, flow: Flow, requested: Any, req: ChatRequest | CompletionRequest) -> BackendRoute:
        """Follow the routers to a generating route (a ``route …`` span around their decisions when traced)."""
        if not isinstance(requested, RouterRoute):
            route, flow.routed = await self.gw.table.select(requested, _route_query(req))
            return route
        rspan = flow.span.child(f"route {requested.name}") if flow.span is not None else None
        try:
            route, flow.routed = await self.gw.table.select(requested, _route_query(req))
        finally:
            if rspan is not None:
                end_router_span(rspan, flow.routed)
        return route

    # ---- response cache --------------------------------------------------------------------------------------

    async def cached(self, flow: Flow, route: BackendRoute) -> CachedAnswer | None:
        """The stored answer to this request, if its route caches and has one; priced at $0 (the token counts of
        the models that wrote it, no cost), decided as ``cache hit``."""
        if flow.probe is None:
            return None
        answer = await self.gw.response_cache.lookup(flow.probe)
        if answer is None:
            return None
        flow.cache, flow.probe = HIT, None
        answered = self.gw.table.routes.get(answer.chosen)
        flow.attempted = Attempted(answered if isinstance(answered, BackendRoute) else route,
                                   f"cache hit: the answer of request {answer.request_id}")
        flow.attempted.routed = flow.routed
        free = Price()
        for u in answer.usage:
            flow.usage.add(u["model"], free, u["prompt_tokens"], u["completion_tokens"], u.get("cached_tokens", 0))
        return answer

    async def remember(self, flow: Flow, answer: CachedAnswer | None) -> None:
        """Store a complete answer of a cacheable miss."""
        if flow.probe is not None and answer is not None:
            await self.gw.response_cache.store(flow.probe, answer)

    async def finish(self, flow: Flow, exc: BaseException | None = None) -> None:
        """Settle limits, write the log row, update metrics. Never raises."""
        if exc is not None:
            flow.status = "error"
            if isinstance(exc, TandemError):
                flow.http_status, flow.error = exc.status, f"{type(exc).__name__}: {exc.message}"
            else:
                flow.http_status, flow.error = 499 if _is_cancel(exc) else 500, f"{type(exc).__name__}: {exc}"
        if flow.reservation is not None:
            try:
                await self.gw.limits.settle(flow.reservation, flow.usage.cost_usd,
                                            flow.usage.prompt_tokens + flow.usage.completion_tokens)
            except Exception as e:  # noqa: BLE001 - a limits outage must not lose the log row
                flow.error = (flow.error or "") + f" (settle failed: {e})"
        elapsed = time.perf_counter() - flow.started
        att = flow.attempted
        decision = flow.decision()
        span = flow.span or self.gw.tracer.request_span(flow.endpoint, flow.route or "?", None, flow.started)
        if span.recording:
            end_request_span(span, route=flow.route or "?", request_id=flow.request_id, status=flow.status,
                             http_status=flow.http_status, error=flow.error, usage=flow.usage, decision=decision,
                             response_model=att.route.backend.name if att else None, cache=flow.cache,
                             backend_s=flow.backend_s, overhead_ms=flow.overhead_ms(), stream=flow.stream,
                             key_id=flow.key.id if flow.key else None)
        self.gw.request_log.submit(LogRow(
            id=flow.request_id, created_at=time.time() - elapsed, key_id=flow.key.id if flow.key else None,
            route=flow.route or "?", model_chosen=att.route.backend.name if att else None,
            decision=decision, usage=flow.usage.to_list(),
            prompt_tokens=flow.usage.prompt_tokens, completion_tokens=flow.usage.completion_tokens,
            cost_usd=flow.usage.cost_usd, latency_ms=elapsed * 1000.0,
            ttft_ms=None if flow.ttft_s is None else flow.ttft_s * 1000.0, status=flow.status,
            http_status=flow.http_status, error=flow.error, stream=flow.stream, prompt=flow.prompt,
            response=flow.response if self._log_prompts(flow) else None, eval_run=flow.eval_run,
            provenance=flow.provenance if flow.provenance is not None and self._log_prompts(flow) else None,
        ))
        self.gw.metrics.observe(flow.route or "?", flow.status, elapsed, elapsed - flow.backend_s, flow.usage)

    def account(self, flow: Flow, route: BackendRoute, counts, by_model=None) -> None:
        """Price what the backend reports: one backend's counts, or a collaboration's counts per backend."""
        if by_model:
            for name, c in by_model.items():
                member = self.gw.backends.get(name)
                price = member.price if member is not None else route.backend.price
                flow.usage.add(name, price, c.prompt_tokens, c.completion_tokens, c.cached_tokens)
            flow.usage.for_model(next(iter(by_model))).seconds += flow.backend_s
        elif counts is not None:
            b = route.backend
            flow.usage.add(b.name, b.price, counts.prompt_tokens, counts.completion_tokens, counts.cached_tokens,
                           flow.backend_s)

    # ---- non-streaming ---------------------------------------------------------------------------------------

    async def chat(self, flow: Flow, body: ChatCompletionRequest) -> dict[str, Any]:
        route, req = await self.prepare(flow, body)
        hit = await self.cached(flow, route)
        if hit is not None:
            return self._whole(flow, hit)
        res, flow.attempted, flow.backend_s = await call_whole(self.gw.table, route, req, self.cooldowns,
                                                                 flow.router_fallbacks(), flow.span)
        flow.attempted.routed = flow.routed
        if res.decision:
            flow.routed.append(res.decision)
        self.account(flow, flow.attempted.route, res.counts, res.counts_by_model)
        flow.response = res.message.get("content")
        flow.provenance = runs_for(flow.response, res.provenance)
        choices = [{"index": i, "message": r.message, "logprobs": r.logprobs, "finish_reason": r.finish_reason}
                   for i, r in enumerate(res.all_choices())]  # n > 1: one ChatResult per choice
        model = res.model or flow.attempted.route.backend.name
        if flow.probe is not None:
            await self.remember(flow, CachedAnswer("chat", model, flow.attempted.route.name, choices,
                                                   flow.usage.to_list(), res.provenance, flow.request_id))
        return {
            "id": "chatcmpl-" + flow.request_id, "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": flow.usage.openai_usage(),
            "tandem": {**flow.tandem_object(), **({"provenance": res.provenance} if res.provenance else {})},
        }

    async def complete(self, flow: Flow, body: CompletionRequestBody) -> dict[str, Any]:
        route, req = await self.prepare(flow, body)
        hit = await self.cached(flow, route)
        if hit is not None:
            return self._whole(flow, hit)
        res, flow.attempted, flow.backend_s = await call_whole(self.gw.table, route, req, self.cooldowns,
                                                                 flow.router_fallbacks(), flow.span)
        flow.attempted.routed = flow.routed
        self.account(flow, flow.attempted.route, res.counts)
        flow.response = res.text
        model = res.model or flow.attempted.route.backend.name
        choices = [{"index": 0, "text": res.text, "logprobs": res.logprobs, "finish_reason": res.finish_reason}]
        if flow.probe is not None:
            await self.remember(flow, CachedAnswer("completions", model, flow.attempted.route.name, choices,
                                                   flow.usage.to_list(), None, flow.request_id))
        return {
            "id": "cmpl-" + flow.request_id, "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": flow.usage.openai_usage(), "tandem": flow.tandem_object(),
        }

    def _whole(self, flow: Flow, hit: CachedAnswer) -> dict[str, Any]:
        """A non-streamed response from a cached answer: the live response's shape, the hit's usage and decision."""
        chat = hit.endpoint == "chat"
        choices = [{"index": i, **{k: v for k, v in c.items() if k != "index"}} for i, c in enumerate(hit.choices)]
        first = hit.choices[0] if hit.choices else {}
        flow.response = (first.get("message") or {}).get("content") if chat else first.get("text")
        flow.provenance = runs_for(flow.response, hit.provenance)
        tandem = flow.tandem_object()
        if hit.provenance:
            tandem["provenance"] = hit.provenance
        return {"id": ("chatcmpl-" if chat else "cmpl-") + flow.request_id,
                "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": hit.model, "choices": choices, "usage": flow.usage.openai_usage(), "tandem": tandem}

    # ---- streaming -------------------------------------------------------------------------------------------

    async def open(self, flow: Flow, body: ChatCompletionRequest | CompletionRequestBody
                   ) -> tuple[StreamEvent | None, AsyncGenerator[StreamEvent, None], bool]:
        """Start the stream (falls back while nothing has been sent). Returns (first event, rest, include_usage)."""
        route, req = await self.prepare(flow, body)
        hit = await self.cached(flow, route)
        if hit is not None:  # streamed as a live answer is
            flow.ttft_s = time.perf_counter() - flow.started
            return *replay_events(hit), body.include_usage
        first, rest, flow.attempted, flow.backend_s = await open_stream(self.gw.table, route, req, self.cooldowns,
                                                                         flow.router_fallbacks(), flow.span)
        flow.attempted.routed = flow.routed
        flow.ttft_s = time.perf_counter() - flow.started
        return first, rest, body.include_usage

    async def sse(self, flow: Flow, first: StreamEvent | None, rest: AsyncGenerator[StreamEvent, None],
                  include_usage: bool, chat: bool) -> AsyncGenerator[bytes, None]:
        """SSE bytes for an opened stream; the last chunk carries usage (if asked) and the ``tandem`` object.
        A failure midway ends with an ``error`` event and no ``[DONE]``."""
        att = flow.attempted
        assert att is not None
        model = att.route.backend.name
        base = {"id": ("chatcmpl-" if chat else "cmpl-") + flow.request_id,
                "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
                "model": model}
        text: list[str] = []
        writers: list[tuple[int, str]] = []  # (piece, model) for pieces that name their writer (collaborations)
        pieces = 0
        exc: BaseException | None = None
        rec = StreamRecorder(flow.endpoint) if flow.probe is not None else None  # a cacheable miss is stored
        t_wait = time.perf_counter()
        try:
            ev = first
            while ev is not None:
                if rec is not None:
                    rec.add(ev)
                if ev.counts is not None or ev.counts_by_model:
                    self.account(flow, att.route, ev.counts, ev.counts_by_model)
                if ev.decision:
                    flow.routed.append(ev.decision)
                if ev.delta is not None or ev.finish_reason is not None or ev.text is not None or ev.logprobs:
                    piece = ev.delta.get("content") if ev.delta else ev.text
                    if piece:
                        if ev.model is not None:
                            writers.append((pieces, ev.model))
                        text.append(piece)
                        pieces += 1
                    if chat:
                        choice = {"index": ev.index, "delta": ev.delta or {}, "logprobs": ev.logprobs,
                                  "finish_reason": ev.finish_reason}
                    else:
                        choice = {"index": 0, "text": ev.text or "", "logprobs": ev.logprobs,
                                  "finish_reason": ev.finish_reason}
                    chunk = {**base, "choices": [choice]}
                    if ev.model is not None:
                        chunk["tandem"] = {"model": ev.model}  # which model wrote this piece
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                t_wait = time.perf_counter()
                try:
                    ev = await rest.__anext__()
                except StopAsyncIteration:
                    ev = None
                flow.backend_s += time.perf_counter() - t_wait
            flow.response = "".join(text)
            if rec is not None:
                await self.remember(flow, rec.answer(model, att.route.name, flow.usage.to_list(), flow.request_id))
            final: dict[str, Any] = {**base, "choices": []}
            if include_usage:
                final["usage"] = flow.usage.openai_usage()
            final["tandem"] = flow.tandem_object()
            yield b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n"
        except TandemError as e:
            exc = e
            flow.response = "".join(text)
            if not flow.usage.models:  # partial usage: what was streamed before the break
                flow.usage.add(model, att.route.backend.price, 0, pieces)
            body = e.to_body()
            body["tandem"] = flow.tandem_object()
            yield b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
        except BaseException as e:  # client went away (cancelled) or a bug: log it, never lose the row
            exc = e
            flow.response = "".join(text)
            if not flow.usage.models:
                flow.usage.add(model, att.route.backend.price, 0, pieces)
            raise
        finally:
            try:
                await rest.aclose()
            except Exception:  # noqa: BLE001 - closing the backend's stream must not lose the log row
                pass
            flow.provenance = runs_from_pieces(text, writers, model)
            await self.finish(flow, exc)


def _route_query(req: ChatRequest | CompletionRequest) -> RouteQuery:
    """What a query-level router sees: the conversation (chat) or the prompt text (completions)."""
    if isinstance(req, ChatRequest):
        return RouteQuery.from_messages(req.messages)
    return RouteQuery(prompt=req.prompt if isinstance(req.prompt, str) else "")


def _is_cancel(e: BaseException) -> bool:
    return isinstance(e, (asyncio.CancelledError, GeneratorExit))
