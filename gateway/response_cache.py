"""The response cache: a route that opts in (``cache: {ttl_s, shared, semantic_threshold}``) answers a repeated
request from the answer it stored, without calling a backend.

Rules:

* **What is cached.** Only answers to requests that are not sampled, or sampled with a ``seed``
  (:func:`cacheable`: ``temperature`` 0, or ``seed`` set; an unset ``temperature`` counts as sampled — OpenAI's
  default is 1). Only complete answers (every choice has a finish reason); never an error or a broken stream.
* **The key** (:func:`fingerprint`, pure) is a SHA-256 of the normalised request: endpoint, requested route (``auto``
  resolved), scope, messages (``None`` fields dropped, a content list holding one text part read as that text,
  object keys sorted), max_tokens, temperature, top_p, stop, seed, logprobs, top_logprobs, tools, tool_choice, n and
  the forwarded vendor fields. ``stream`` and ``stream_options`` are not part of it: a streamed answer serves a
  non-streamed request and back.
* **Scope.** The caller's API key id (no key: one anonymous scope); ``shared: true`` makes one scope for the route.
* **Order.** The pipeline looks up after authentication, rate limits and the budget reservation, so a key over budget
  gets 429 even when the answer is cached; a hit settles its reservation at $0.
* **A hit** is priced at $0 (its usage lists the models that wrote the answer with their token counts and no cost),
  marked ``"cache": "hit"`` in the decision and the log row (a cacheable miss ``"miss"``, a request on a caching
  route that cannot be cached ``"bypass"``), sent with ``x-tandem-cache``, and streamed, when the request streams,
  as a live answer is (:func:`replay_events`: role chunk, content pieces, finish chunk, then the pipeline's usage
  chunk and final ``tandem`` object).
* **Where.** In Redis (the limit store's client, ``storage.redis_url``) with the TTL set on the key; otherwise in
  process (:class:`MemoryAnswerStore`, least recently used dropped beyond the route's ``max_entries``). A Redis
  failure is a miss, never a failed request (the cache fails open; limits fail closed).
* **Semantic matching** (``semantic_threshold``, off by default): ``gateway.semantic_cache``.

What it leaves out: cache control by the client (``Cache-Control`` headers, a per-request opt-out), invalidation
other than the TTL, caching of ``n > 1`` streams' logprobs and of streamed completion logprobs (such answers are not
stored), and TCAR routes' per-key agents under ``shared: true`` (a shared cache shares their answers too).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson

from gateway.backends.base import ChatRequest, CompletionRequest, StreamEvent, merge_tool_call_delta
from gateway.config import RouteCacheConfig, TandemConfig
from gateway.semantic_cache import MemorySemanticIndex, RedisSemanticIndex, SemanticIndex, best_match

log = logging.getLogger("tandem")

HIT, MISS, BYPASS = "hit", "miss", "bypass"
SHARED_SCOPE = "*"
ANONYMOUS_SCOPE = "-"


# ---------------------------------------------------------------------------------------------------- the key


def cacheable(temperature: float | None, seed: int | None) -> bool:
    """Whether an answer may be reused: greedy decoding (``temperature == 0``) or a fixed ``seed``."""
    return seed is not None or temperature == 0


def _normal_message(m: dict[str, Any]) -> dict[str, Any]:
    d = {k: v for k, v in m.items() if v is not None}
    c = d.get("content")
    if isinstance(c, list) and len(c) == 1 and isinstance(c[0], dict) and c[0].get("type") == "text" and set(
            c[0]) <= {"type", "text"}:
        d["content"] = c[0].get("text") or ""
    return d


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "\n".join(str(p.get("text") or "") for p in content)
    return None


@dataclass(frozen=True)
class Fingerprint:
    """A cacheable request's exact key, and for semantic matching its group and the text compared."""

    exact: str
    group: str | None = None  # everything but the last user message's text, hashed (None: no text to compare)
    text: str | None = None


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


def fingerprint(endpoint: str, route: str, scope: str, req: ChatRequest | CompletionRequest) -> Fingerprint | None:
    """The request's cache keys (see the module docstring); None when the request may not be cached."""
    if not cacheable(req.temperature, req.seed):
        return None
    fields: dict[str, Any] = {"endpoint": endpoint, "route": route, "scope": scope, "max_tokens": req.max_tokens,
                              "temperature": req.temperature, "top_p": req.top_p, "stop": req.stop, "seed": req.seed,
                              "logprobs": req.logprobs, "extra": req.extra}
    text: str | None = None
    if isinstance(req, ChatRequest):
        msgs = [_normal_message(m) for m in req.messages]
        fields.update(top_logprobs=req.top_logprobs, tools=req.tools, tool_choice=req.tool_choice, n=req.n)
        exact = _digest({**fields, "messages": msgs})
        last = len(msgs) - 1
        if msgs and msgs[last].get("role") == "user":
            text = _text_of(msgs[last].get("content"))
        if text is None:
            return Fingerprint(exact)
        rest = msgs[:last] + [{**msgs[last], "content": None}]
        return Fingerprint(exact, _digest({**fields, "messages": rest}), text)
    fields["echo"] = req.echo
    exact = _digest({**fields, "prompt": req.prompt})
    if isinstance(req.prompt, str):
        return Fingerprint(exact, _digest(fields), req.prompt)
    return Fingerprint(exact)


def scope_of(policy: RouteCacheConfig, key_id: str | None) -> str:
    """Whose entries a request sees: the route's one shared scope, or its API key's."""
    return SHARED_SCOPE if policy.shared else (key_id or ANONYMOUS_SCOPE)


# ---------------------------------------------------------------------------------------------------- the answer


@dataclass
class CachedAnswer:
    """A stored answer: enough to rebuild the response (whole or streamed) and its usage."""

    endpoint: str  # chat | completions
    model: str  # the response's ``model``
    chosen: str  # the route that answered
    choices: list[dict[str, Any]]  # chat: message, logprobs, finish_reason; completions: text, logprobs, finish_reason
    usage: list[dict[str, Any]]  # per model: model, prompt_tokens, completion_tokens, cached_tokens
    provenance: list[dict[str, str]] | None = None  # collaborations: [{"model", "text"}] runs
    request_id: str = ""  # the request whose answer this is
    stored_at: float = field(default_factory=time.time)

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, data: bytes) -> CachedAnswer:
        return cls(**orjson.loads(data))


def _pieces(text: str) -> list[str]:
    """A stored text cut into word pieces (each with its trailing white space), as a live stream sends it."""
    return re.findall(r"\s*\S+\s*|\s+", text) or [""]


def answer_events(answer: CachedAnswer) -> Iterator[StreamEvent]:
    """The stream events a live backend would have sent for this answer (no counts: a hit is priced by the caller)."""
    chat = answer.endpoint == "chat"
    for i, ch in enumerate(answer.choices):
        if chat:
            msg = ch.get("message") or {}
            yield StreamEvent(delta={"role": msg.get("role", "assistant"), "content": ""}, index=i)
            runs = answer.provenance if answer.provenance and len(answer.choices) == 1 and not ch.get("logprobs") \
                else None
            if runs:
                for run in runs:
                    yield StreamEvent(delta={"content": run["text"]}, model=run["model"], index=i)
            elif ch.get("logprobs"):
                yield StreamEvent(delta={"content": msg.get("content") or ""}, logprobs=ch["logprobs"], index=i)
            elif msg.get("content"):
                for piece in _pieces(msg["content"]):
                    yield StreamEvent(delta={"content": piece}, index=i)
            if msg.get("tool_calls"):
                yield StreamEvent(delta={"tool_calls": [{"index": j, **tc} for j, tc in enumerate(msg["tool_calls"])]},
                                  index=i)
            yield StreamEvent(delta={}, finish_reason=ch.get("finish_reason"), index=i)
        else:
            for piece in _pieces(ch.get("text") or ""):
                yield StreamEvent(text=piece)
            yield StreamEvent(text="", finish_reason=ch.get("finish_reason"))


def replay_events(answer: CachedAnswer) -> tuple[StreamEvent | None, AsyncGenerator[StreamEvent, None]]:
    """``(first event, the rest)`` of :func:`answer_events`, in the shape ``gateway.dispatch.open_stream`` returns."""
    events = list(answer_events(answer))

    async def rest() -> AsyncGenerator[StreamEvent, None]:
        for ev in events[1:]:
            yield ev

    return (events[0] if events else None), rest()


class StreamRecorder:
    """Gathers a live stream's events into a :class:`CachedAnswer` (None if the stream cannot be stored)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._content: dict[int, list[str]] = {}
        self._tools: dict[int, dict[int, dict[str, Any]]] = {}
        self._finish: dict[int, str | None] = {}
        self._logprobs: dict[int, list[Any]] = {}
        self._runs: list[dict[str, str]] = []
        self._storable = True

    def add(self, ev: StreamEvent) -> None:
        i = ev.index
        piece = ev.delta.get("content") if ev.delta else ev.text
        if piece:
            self._content.setdefault(i, []).append(piece)
            if ev.model is not None:
                if self._runs and self._runs[-1]["model"] == ev.model:
                    self._runs[-1]["text"] += piece
                else:
                    self._runs.append({"model": ev.model, "text": piece})
        if ev.delta:
            for tc in ev.delta.get("tool_calls") or []:
                merge_tool_call_delta(self._tools.setdefault(i, {}), tc)
        if ev.logprobs:
            if self.endpoint == "chat" and isinstance(ev.logprobs.get("content"), list):
                self._logprobs.setdefault(i, []).extend(ev.logprobs["content"])
            else:
                self._storable = False
        if ev.finish_reason is not None:
            self._finish[i] = ev.finish_reason
        elif ev.delta is not None or ev.text is not None:
            self._finish.setdefault(i, None)

    def answer(self, model: str, chosen: str, usage: list[dict[str, Any]], request_id: str) -> CachedAnswer | None:
        if not self._storable or not self._finish or any(f is None for f in self._finish.values()):
            return None
        choices: list[dict[str, Any]] = []
        for i in sorted(self._finish):
            text = "".join(self._content.get(i, []))
            lp = {"content": self._logprobs[i]} if i in self._logprobs else None
            if self.endpoint == "chat":
                msg: dict[str, Any] = {"role": "assistant", "content": text if text or i not in self._tools else None}
                if i in self._tools:
                    msg["tool_calls"] = [self._tools[i][j] for j in sorted(self._tools[i])]
                choices.append({"message": msg, "logprobs": lp, "finish_reason": self._finish[i]})
            else:
                choices.append({"text": text, "logprobs": None, "finish_reason": self._finish[i]})
        return CachedAnswer(self.endpoint, model, chosen, choices, usage, self._runs or None, request_id)


# ---------------------------------------------------------------------------------------------------- stores


class AnswerStore(ABC):
    """Exact key → stored answer bytes, each with a TTL."""

    @abstractmethod
    async def get(self, route: str, key: str) -> bytes | None:
        """The stored bytes, or None (absent, expired, or the store failed)."""

    @abstractmethod
    async def put(self, route: str, key: str, value: bytes, ttl_s: float, max_entries: int) -> None:
        """Store ``value`` for ``ttl_s`` seconds (a failure is logged, never raised); an in-process store keeps at
        most ``max_entries`` per route."""

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for the start-up log."""


class MemoryAnswerStore(AnswerStore):
    """One bounded LRU per route in this process; ``clock`` (monotonic seconds) decides expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._routes: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}

    @property
    def description(self) -> str:
        return "in process (one replica only)"

    async def get(self, route: str, key: str) -> bytes | None:
        entries = self._routes.get(route)
        hit = entries.get(key) if entries is not None else None
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del entries[key]
            return None
        entries.move_to_end(key)
        return hit[1]

    async def put(self, route: str, key: str, value: bytes, ttl_s: float, max_entries: int) -> None:
        entries = self._routes.setdefault(route, OrderedDict())
        entries[key] = (self.clock() + ttl_s, value)
        entries.move_to_end(key)
        while len(entries) > max_entries:
            entries.popitem(last=False)

    def size(self, route: str) -> int:
        """Entries held for ``route`` (expired ones included until looked up)."""
        return len(self._routes.get(route, ()))


class RedisAnswerStore(AnswerStore):
    """Answers in a shared Redis (``SET … PX ttl``): every replica sees them."""

    def __init__(self, redis: Any, prefix: str = "tandem:rc") -> None:
        self.redis = redis
        self.prefix = prefix

    @property
    def description(self) -> str:
        return "redis (shared by the replicas)"

    async def get(self, route: str, key: str) -> bytes | None:
        try:
            return await self.redis.get(f"{self.prefix}:{key}")
        except Exception as e:  # noqa: BLE001 - the cache fails open: a Redis outage is a miss
            log.warning("response cache read failed: %s", e)
            return None

    async def put(self, route: str, key: str, value: bytes, ttl_s: float, max_entries: int) -> None:
        try:
            await self.redis.set(f"{self.prefix}:{key}", value, px=max(1, int(ttl_s * 1000)))
        except Exception as e:  # noqa: BLE001 - the cache fails open
            log.warning("response cache write failed: %s", e)


# ---------------------------------------------------------------------------------------------------- the cache


@dataclass
class Probe:
    """One request's look-up: its keys and policy, and its embedding once computed (reused when storing)."""

    route: str
    policy: RouteCacheConfig
    key: Fingerprint
    vector: np.ndarray | None = None


class ResponseCache:
    """Per-route policies (from the config, swapped on reload), one answer store and one semantic index.
    ``embed`` is the sentence embedder's one-text function, made on first use by ``embedder_factory``."""

    def __init__(self, store: AnswerStore, index: SemanticIndex,
                 embedder_factory: Callable[[], Callable[[str], np.ndarray]] | None = None) -> None:
        self.answers = store
        self.index = index
        self.embedder_factory = embedder_factory
        self._embed: Callable[[str], np.ndarray] | None = None
        self.policies: dict[str, RouteCacheConfig] = {}

    @property
    def description(self) -> str:
        routes = ", ".join(sorted(self.policies)) or "no route caches"
        return f"{self.answers.description}; {routes}"

    def configure(self, cfg: TandemConfig) -> None:
        """Take the cache policies of ``cfg``'s routes (a reload calls it again)."""
        self.policies = {r.name: r.cache for r in cfg.routes if r.cache is not None}

    def probe(self, endpoint: str, route: str, key_id: str | None,
              req: ChatRequest | CompletionRequest) -> tuple[str | None, Probe | None]:
        """``(marker, probe)``: (None, None) for a route without a cache, (``bypass``, None) for a request that may
        not be cached, (``miss``, probe) otherwise (the look-up turns it into a hit)."""
        policy = self.policies.get(route)
        if policy is None:
            return None, None
        key = fingerprint(endpoint, route, scope_of(policy, key_id), req)
        return (BYPASS, None) if key is None else (MISS, Probe(route, policy, key))

    async def _vector(self, probe: Probe) -> np.ndarray | None:
        if probe.vector is None and probe.key.text is not None:
            if self._embed is None:
                if self.embedder_factory is None:
                    return None
                self._embed = self.embedder_factory()
            probe.vector = await asyncio.to_thread(self._embed, probe.key.text)
        return probe.vector

    async def lookup(self, probe: Probe) -> CachedAnswer | None:
        """The stored answer for the probe: exact match, then (if the route asks) the closest paraphrase."""
        data = await self.answers.get(probe.route, probe.key.exact)
        if data is None and probe.policy.semantic_threshold is not None and probe.key.group is not None:
            data = await self._semantic(probe, probe.policy.semantic_threshold)
        if data is None:
            return None
        try:
            return CachedAnswer.loads(data)
        except (orjson.JSONDecodeError, TypeError) as e:
            log.warning("response cache entry unreadable, ignored: %s", e)
            return None

    async def _semantic(self, probe: Probe, threshold: float) -> bytes | None:
        assert probe.key.group is not None
        keys, vecs = await self.index.candidates(probe.key.group)
        if not keys:
            return None
        q = await self._vector(probe)
        if q is None:
            return None
        found = best_match(q, vecs, threshold)
        if found is None:
            return None
        data = await self.answers.get(probe.route, keys[found[0]])
        if data is None:
            await self.index.drop(probe.key.group, keys[found[0]])
        return data

    async def store(self, probe: Probe, answer: CachedAnswer) -> None:
        """Store an answer under the probe's exact key (and its vector in the semantic index); an answer with a
        choice that has no finish reason is incomplete and not stored."""
        if not answer.choices or any(c.get("finish_reason") is None for c in answer.choices):
            return
        pol = probe.policy
        try:
            await self.answers.put(probe.route, probe.key.exact, answer.dumps(), pol.ttl_s, pol.max_entries)
            if pol.semantic_threshold is not None and probe.key.group is not None:
                vec = await self._vector(probe)
                if vec is not None:
                    await self.index.add(probe.key.group, probe.key.exact, vec, pol.ttl_s, pol.max_entries)
        except Exception as e:  # noqa: BLE001 - an answer that cannot be stored is still the client's answer
            log.warning("response cache: answer of request %s not stored: %s", answer.request_id, e)


def make_response_cache(redis: Any | None,
                        embedder_factory: Callable[[], Callable[[str], np.ndarray]] | None) -> ResponseCache:
    """Redis-backed when the limit store has a Redis client (``LimitStore.shared_redis``), else in process."""
    if redis is not None:
        return ResponseCache(RedisAnswerStore(redis), RedisSemanticIndex(redis), embedder_factory)
    return ResponseCache(MemoryAnswerStore(), MemorySemanticIndex(), embedder_factory)
