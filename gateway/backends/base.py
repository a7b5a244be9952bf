"""The Backend interface: one served model, at chat level (and token level where the model allows it).

A backend turns a normalized :class:`ChatRequest` into a stream of :class:`StreamEvent` (``stream_chat``, the one
abstract method, an async generator) or one :class:`ChatResult` (``chat``; by default the stream, gathered). Backends
that can also do raw text completions implement ``complete``/``stream_complete``; token-level access
(``complete_ids``, ``next_logits``) follows ``collab.protocol``. Each backend knows its
:class:`~gateway.usage.Price`. In-process models load their weights in :meth:`Backend.load`, which the gateway awaits
once before serving.

With ``n > 1`` a backend that declares :data:`CAP_N` answers one :class:`ChatResult` whose ``choices`` holds every
choice (its own fields are choice 0's), and streams events whose ``index`` names their choice (0 otherwise).
The request's caller travels in the request (:attr:`ChatRequest.caller_key_id`), so composite routes (TCAR) know whose
agents to use without any global state.

The result and event types are slotted dataclasses: one :class:`StreamEvent` is made per streamed piece, so adding a
field here is paid on every chunk (``python -m bench.gateway_overhead`` measures the hot path).

What it leaves out: retries, fallbacks and pricing of a whole request (``gateway.dispatch``), HTTP (``gateway.app``).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidRequest
from gateway.usage import Price

# Capabilities a backend may declare. The gateway answers 400 when a request needs one the route lacks.
CAP_TOOLS = "tools"
CAP_LOGPROBS = "logprobs"
CAP_N = "n"  # n > 1 choices
CAP_COMPLETIONS = "completions"  # /v1/completions
CAP_TOKEN_IDS = "token_ids"  # collab.protocol.TokenModel
CAP_LOGITS = "logits"  # collab.protocol.LogitModel


@dataclass
class ChatRequest:
    """A chat request as a backend sees it (already validated; ``model`` is the backend's own)."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    n: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # other fields, passed through to backends that take them
    caller_key_id: str | None = None  # id of the API key that sent the request (None: no key); never sent upstream


@dataclass
class CompletionRequest:
    """A raw completion request: text or token ids."""

    prompt: str | list[int]
    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None
    echo: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TokenCounts:
    """Tokens one backend call consumed and produced."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(slots=True)
class StreamEvent:
    """One piece of a streamed answer: a delta (``{"content": ...}``, ``{"role": ...}``, ``{"tool_calls": [...]}``),
    possibly a finish reason and logprobs; the last event of a call carries ``counts``. With ``n > 1``, ``index``
    names the choice the piece belongs to."""

    delta: dict[str, Any] | None = None
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    text: str | None = None  # completions: the text piece (``delta`` is for chat)
    counts: TokenCounts | None = None
    model: str | None = None  # collaborations: the backend that wrote this piece
    counts_by_model: dict[str, TokenCounts] | None = None  # collaborations: final counts of every backend touched
    decision: dict[str, Any] | None = None  # composite routes (TCAR): their routing decision, logged with the request
    index: int = 0  # n > 1: the choice this piece belongs to


@dataclass(slots=True)
class ChatResult:
    """A whole answer from one backend call. With ``n > 1`` the fields are choice 0's and ``choices`` holds every
    choice (each a :class:`ChatResult`, in index order); with one choice ``choices`` is None."""

    message: dict[str, Any]
    finish_reason: str | None
    counts: TokenCounts
    logprobs: dict[str, Any] | None = None
    model: str = ""
    counts_by_model: dict[str, TokenCounts] | None = None  # collaborations: per backend
    provenance: list[dict[str, str]] | None = None  # collaborations: [{"model", "text"}] runs, in order
    decision: dict[str, Any] | None = None  # composite routes (TCAR): their routing decision, logged with the request
    choices: list[ChatResult] | None = None  # n > 1: every choice, choice 0 first

    def all_choices(self) -> list[ChatResult]:
        """Every choice of the answer, in index order (just this result when there is one)."""
        return self.choices or [self]


@dataclass(slots=True)
class CompletionResult:
    text: str
    finish_reason: str | None
    counts: TokenCounts
    logprobs: dict[str, Any] | None = None
    model: str = ""


class Backend(abc.ABC):
    """One served model. Subclasses implement :meth:`stream_chat`; the rest has defaults."""

    kind: str = ""

    def __init__(self, name: str, price: Price, capabilities: frozenset[str] = frozenset()):
        self.name = name
        self.price = price
        self.capabilities = capabilities

    async def load(self) -> None:  # noqa: B027 - optional hook, remote backends have nothing to load
        """Load weights before serving; in-process models override it. The gateway awaits it once per backend it
        builds, before any request reaches the backend. Default: nothing to do."""

    @abc.abstractmethod
    def stream_chat(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream the answer (an async generator: callers that stop early ``aclose()`` it); the last event carries
        the token counts. Raises ``gateway.errors.BackendError`` subclasses for backend failures (before or after the
        first event)."""

    async def chat(self, req: ChatRequest) -> ChatResult:
        """The whole answer. Default: gather :meth:`stream_chat`."""
        content: list[str] = []
        tool_calls: dict[int, dict[str, Any]] = {}
        finish, counts, lp_content, by_model = None, TokenCounts(), [], None
        runs: list[dict[str, str]] = []
        async for ev in self.stream_chat(req):
            if ev.delta:
                if ev.delta.get("content"):
                    content.append(ev.delta["content"])
                    if ev.model is not None:
                        if runs and runs[-1]["model"] == ev.model:
                            runs[-1]["text"] += ev.delta["content"]
                        else:
                            runs.append({"model": ev.model, "text": ev.delta["content"]})
                for tc in ev.delta.get("tool_calls") or []:
                    merge_tool_call_delta(tool_calls, tc)
            if ev.logprobs and ev.logprobs.get("content"):
                lp_content.extend(ev.logprobs["content"])
            finish = ev.finish_reason or finish
            if ev.counts:
                counts = ev.counts
            if ev.counts_by_model:
                by_model = ev.counts_by_model
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not tool_calls else None}
        if tool_calls:
            message["tool_calls"] = [tool_calls[i] for i in sorted(tool_calls)]
        return ChatResult(message, finish, counts, {"content": lp_content} if req.logprobs else None, self.name,
                          by_model, runs or None)

    def stream_complete(self, req: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a text completion (an async generator, like :meth:`stream_chat`). Default: not served (400)."""
        raise InvalidRequest(f"route backend '{self.name}' does not serve /v1/completions", param="model")

    async def complete(self, req: CompletionRequest) -> CompletionResult:
        text, finish, counts = [], None, TokenCounts()
        async for ev in self.stream_complete(req):
            if ev.text:
                text.append(ev.text)
            finish = ev.finish_reason or finish
            if ev.counts:
                counts = ev.counts
        return CompletionResult("".join(text), finish, counts, None, self.name)

    async def health(self) -> bool:
        """Cheap readiness probe."""
        return True

    def estimate_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """An upper-bound-ish token estimate for budget reservations (about 4 characters per token)."""
        chars = 0
        for m in messages:
            c = m.get("content")
            if isinstance(c, str):
                chars += len(c)
            elif isinstance(c, list):
                chars += sum(len(p.get("text") or "") for p in c if isinstance(p, dict))
            chars += 8
        return chars // 3 + 1

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections, threads and memory."""


def merge_tool_call_delta(acc: dict[int, dict[str, Any]], tc: dict[str, Any]) -> None:
    """Fold one streamed tool-call delta into the accumulated calls (OpenAI streams arguments in pieces)."""
    idx = tc.get("index", 0)
    cur = acc.setdefault(idx, {"id": tc.get("id"), "type": "function", "function": {"name": "", "arguments": ""}})
    if tc.get("id"):
        cur["id"] = tc["id"]
    fn = tc.get("function") or {}
    if fn.get("name"):
        cur["function"]["name"] += fn["name"]
    if fn.get("arguments"):
        cur["function"]["arguments"] += fn["arguments"]
