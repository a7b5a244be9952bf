"""A backend for any OpenAI-compatible HTTP server, tuned for vLLM: chat, completions, and token-id completions.

:class:`OpenAIHTTPBackend` keeps one pooled ``httpx.AsyncClient`` per backend (and per event loop) with keep-alive,
the config's connection limit and connect timeout; each call has a total time limit. The hot path builds plain
dicts and parses with ``orjson`` — no pydantic per request. Streams always ask for ``stream_options.include_usage`` so
the last event carries :class:`TokenCounts` (with ``prompt_tokens_details.cached_tokens``). ``complete_ids`` speaks
``collab.protocol``: a token-id prompt to ``/v1/completions`` with ``logprobs=k`` and
``return_tokens_as_token_ids`` (vLLM then keys alternatives ``token_id:N``) and ``stop_token_ids``.
``ChatRequest.extra`` / ``CompletionRequest.extra`` fields go to the upstream body as they are (vLLM takes
``ignore_eos``, ``min_tokens``, ``top_k``, ``skip_special_tokens``, …).

Errors map onto ``gateway.errors``; every raised error has a boolean ``retryable`` attribute (True: connection
refused, timeout, upstream 5xx or 429, a stream broken midway — trying again may work; False otherwise):

- connection refused / unreachable → ``BackendUnavailable``; timeouts → ``BackendTimeout``;
- upstream 5xx → ``BackendError``; 429 → ``BackendUnavailable``; 401/403/404 → ``BackendError`` (our config is wrong);
- other upstream 4xx → ``InvalidRequest`` with upstream's message (``PromptTooLarge`` for context-length errors);
- a stream that breaks or reports an error midway → ``BackendError`` from the iterator.

With ``n > 1``, ``chat`` returns a :class:`MultiChatResult` (choice 0 plus ``choices``) and ``stream_chat`` yields
:class:`ChoiceStreamEvent` objects carrying the choice ``index``.

What it leaves out: retries and fallbacks (``gateway.dispatch``), tokenizing (callers of ``complete_ids`` bring ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from collab.protocol import IdCompletion, TokenStep
from gateway.backends.base import (
    CAP_COMPLETIONS,
    CAP_LOGPROBS,
    CAP_N,
    CAP_TOKEN_IDS,
    CAP_TOOLS,
    Backend,
    ChatRequest,
    ChatResult,
    CompletionRequest,
    CompletionResult,
    StreamEvent,
    TokenCounts,
)
from gateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
    PromptTooLarge,
    TandemError,
)
from gateway.usage import Price

OPENAI_CAPABILITIES = frozenset({CAP_TOOLS, CAP_LOGPROBS, CAP_N, CAP_COMPLETIONS, CAP_TOKEN_IDS})
_CONTEXT_HINTS = ("context length", "maximum context", "context_length", "too long", "max_model_len")
_TOKEN_ID_PREFIX = "token_id:"


@dataclass
class MultiChatResult(ChatResult):
    """A non-streamed answer with ``n > 1``: the fields are choice 0's, ``choices`` holds all of them."""

    choices: list[ChatResult] = field(default_factory=list)


@dataclass
class ChoiceStreamEvent(StreamEvent):
    """A stream event of one choice when ``n > 1``."""

    index: int = 0


def _total_timeout(seconds: float) -> contextlib.AbstractAsyncContextManager[Any]:
    """A total time limit for one call (Python 3.11+; on 3.10 httpx's per-operation timeouts only)."""
    timeout = getattr(asyncio, "timeout", None)
    return timeout(seconds) if timeout is not None else contextlib.nullcontext()


def make_error(cls: type[TandemError], message: str, *, retryable: bool, **kw: Any) -> TandemError:
    """An error of class ``cls`` with its ``retryable`` attribute set (``gateway.dispatch`` reads it)."""
    err = cls(message, **kw)
    err.retryable = retryable  # type: ignore[attr-defined]
    return err


def upstream_message(body: bytes) -> str:
    """The error message in an upstream error body (OpenAI ``{"error": {"message"}}``, vLLM, FastAPI), or the text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])
    return str(data)[:500]


def status_error(backend: str, status: int, body: bytes) -> TandemError:
    """The error for an upstream non-2xx answer."""
    msg = upstream_message(body)
    if status >= 500:
        return make_error(BackendError, f"backend '{backend}' failed ({status}): {msg}", retryable=True)
    if status == 429:
        return make_error(BackendUnavailable, f"backend '{backend}' is rate limited: {msg}", retryable=True)
    if status in (401, 403, 404):
        return make_error(BackendError, f"backend '{backend}' refused the call ({status}): {msg}", retryable=False)
    low = msg.lower()
    cls = PromptTooLarge if any(h in low for h in _CONTEXT_HINTS) else InvalidRequest
    return make_error(cls, msg, retryable=False)


def transport_error(backend: str, exc: Exception) -> TandemError:
    """The error for an httpx failure (or a total-time overrun)."""
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
        return make_error(BackendTimeout, f"backend '{backend}' timed out", retryable=True)
    if isinstance(exc, httpx.ConnectError):
        return make_error(BackendUnavailable, f"backend '{backend}' is unreachable: {exc}", retryable=True)
    return make_error(BackendError, f"backend '{backend}' connection failed: {exc!r}", retryable=True)


def stream_error(backend: str, err: Any, payload: bytes) -> TandemError:
    """The error for an error event inside a stream (vLLM reports request validation errors this way, with a
    status ``code``): 4xx codes map like an HTTP status, anything else is a :class:`BackendError`."""
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code < 600:
        return status_error(backend, code, payload)
    return make_error(BackendError, f"backend '{backend}' stream failed: {upstream_message(payload)}", retryable=True)


def counts_from_usage(usage: dict[str, Any] | None) -> TokenCounts:
    if not usage:
        return TokenCounts()
    details = usage.get("prompt_tokens_details") or {}
    return TokenCounts(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                       int(details.get("cached_tokens") or 0))


def parse_token_key(key: str) -> int:
    """``"token_id:17"`` → 17 (vLLM's keys with ``return_tokens_as_token_ids``)."""
    if not key.startswith(_TOKEN_ID_PREFIX):
        raise BackendError(f"expected a 'token_id:N' token, got {key!r} (is the server vLLM?)")
    return int(key[len(_TOKEN_ID_PREFIX):])


def id_completion_from_choice(choice: dict[str, Any], usage: dict[str, Any] | None, k: int) -> IdCompletion:
    """Turn a vLLM ``/v1/completions`` choice (token-id keys) into an :class:`IdCompletion` with the ``k`` best
    alternatives per step (vLLM adds the sampled token when it is not among them; that extra one is dropped)."""
    lp = choice.get("logprobs") or {}
    tokens = lp.get("tokens") or []
    token_lps = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    steps = []
    for tok, tok_lp, top in zip(tokens, token_lps, tops, strict=False):
        alts = sorted(((parse_token_key(key), float(v)) for key, v in (top or {}).items()), key=lambda a: -a[1])[:k]
        steps.append(TokenStep(parse_token_key(tok), float(tok_lp) if tok_lp is not None else float("nan"), alts))
    counts = counts_from_usage(usage)
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return IdCompletion(steps, finish, counts.prompt_tokens, counts.cached_tokens)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _message_of(choice: dict[str, Any]) -> dict[str, Any]:
    msg = choice.get("message") or {}
    out: dict[str, Any] = {"role": msg.get("role") or "assistant", "content": msg.get("content")}
    if msg.get("tool_calls"):
        out["tool_calls"] = msg["tool_calls"]
    return out


class OpenAIHTTPBackend(Backend):
    """An OpenAI-compatible server (vLLM first) over HTTP."""

    kind = "openai"

    def __init__(self, name: str, base_url: str, *, model: str | None = None, price: Price | None = None,
                 api_key: str | None = None, timeout_s: float = 120.0, connect_timeout_s: float = 3.0,
                 max_connections: int = 256, capabilities: frozenset[str] = OPENAI_CAPABILITIES,
                 tokenizer: str | None = None, kind: str = "openai"):
        super().__init__(name, price or Price(), capabilities)
        self.kind = kind
        self.base_url = base_url.rstrip("/")
        self.model = model or name
        self.tokenizer = tokenizer
        self.timeout_s = timeout_s
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                    keepalive_expiry=30.0)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> OpenAIHTTPBackend:
        """Build from a ``gateway.config.OpenAIBackendConfig``."""
        api_key = cfg.api_key or (os.environ.get(cfg.api_key_env) if cfg.api_key_env else None)
        return cls(cfg.name, cfg.base_url, model=cfg.model, price=cfg.price.to_price() if cfg.price else Price(),
                   api_key=api_key, timeout_s=cfg.timeout_s, connect_timeout_s=cfg.connect_timeout_s,
                   max_connections=cfg.max_connections, tokenizer=cfg.tokenizer, kind=cfg.kind)

    # -- the pooled client ------------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        """The pooled client of the running event loop (a new loop — e.g. another ``asyncio.run`` — gets its own)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout,
                                             limits=self._limits)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be gone
                await client.aclose()

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body and return the parsed JSON answer, mapping failures to gateway errors."""
        try:
            async with _total_timeout(self.timeout_s):
                resp = await self._http().post(path, content=orjson.dumps(body))
        except (httpx.HTTPError, TimeoutError) as e:
            raise transport_error(self.name, e) from e
        if resp.status_code >= 400:
            raise status_error(self.name, resp.status_code, resp.content)
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as e:
            raise make_error(BackendError, f"backend '{self.name}' sent invalid JSON", retryable=True) from e

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST with ``stream: true`` and yield each SSE ``data:`` object until ``[DONE]``."""
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        started = False
        try:
            async with self._http().stream("POST", path, content=orjson.dumps(body)) as resp:
                if resp.status_code >= 400:
                    raise status_error(self.name, resp.status_code, await resp.aread())
                started = True
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    data = orjson.loads(payload)
                    if "error" in data and "choices" not in data:
                        raise stream_error(self.name, data["error"], payload.encode())
                    yield data
                    if loop.time() > deadline:
                        raise make_error(BackendTimeout, f"backend '{self.name}' timed out", retryable=True)
        except httpx.HTTPError as e:
            if started:
                raise make_error(BackendError, f"backend '{self.name}' stream broke: {e!r}", retryable=True) from e
            raise transport_error(self.name, e) from e
        except orjson.JSONDecodeError as e:
            raise make_error(BackendError, f"backend '{self.name}' sent invalid stream data", retryable=True) from e
        raise make_error(BackendError, f"backend '{self.name}' stream ended without [DONE]", retryable=True)

    # -- chat --------------------------------------------------------------------------------------------------------

    def _chat_body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra) if req.extra else {}
        body["model"] = self.model
        body["messages"] = req.messages
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        if req.logprobs:
            body["logprobs"] = True
            if req.top_logprobs:
                body["top_logprobs"] = req.top_logprobs
        if req.tools:
            body["tools"] = req.tools
            if req.tool_choice is not None:
                body["tool_choice"] = req.tool_choice
        if req.n != 1:
            body["n"] = req.n
        return body

    async def chat(self, req: ChatRequest) -> ChatResult:
        data = await self._post_json("/chat/completions", self._chat_body(req))
        counts = counts_from_usage(data.get("usage"))
        choices = data.get("choices") or []
        if not choices:
            raise make_error(BackendError, f"backend '{self.name}' answered with no choices", retryable=True)
        results = [ChatResult(_message_of(c), c.get("finish_reason"), counts, c.get("logprobs"), self.name)
                   for c in sorted(choices, key=lambda c: c.get("index", 0))]
        if len(results) == 1:
            return results[0]
        first = results[0]
        return MultiChatResult(first.message, first.finish_reason, counts, first.logprobs, self.name, results)

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        multi = req.n != 1
        async for data in self._stream("/chat/completions", self._chat_body(req)):
            for c in data.get("choices") or ():
                delta = c.get("delta")
                ev_delta = _clean(delta) if delta else None
                if multi:
                    yield ChoiceStreamEvent(ev_delta, c.get("finish_reason"), c.get("logprobs"),
                                            index=c.get("index", 0))
                else:
                    yield StreamEvent(ev_delta, c.get("finish_reason"), c.get("logprobs"))
            usage = data.get("usage")
            if usage:
                yield StreamEvent(counts=counts_from_usage(usage))

    # -- completions -------------------------------------------------------------------------------------------------

    def _completion_body(self, req: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra) if req.extra else {}
        body["model"] = self.model
        body["prompt"] = req.prompt
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        if req.logprobs is not None:
            body["logprobs"] = req.logprobs
        if req.echo:
            body["echo"] = True
        return body

    async def complete(self, req: CompletionRequest) -> CompletionResult:
        data = await self._post_json("/completions", self._completion_body(req))
        choices = data.get("choices") or []
        if not choices:
            raise make_error(BackendError, f"backend '{self.name}' answered with no choices", retryable=True)
        c = choices[0]
        return CompletionResult(c.get("text") or "", c.get("finish_reason"), counts_from_usage(data.get("usage")),
                                c.get("logprobs"), self.name)

    async def stream_complete(self, req: CompletionRequest) -> AsyncIterator[StreamEvent]:
        async for data in self._stream("/completions", self._completion_body(req)):
            for c in data.get("choices") or ():
                yield StreamEvent(text=c.get("text"), finish_reason=c.get("finish_reason"), logprobs=c.get("logprobs"))
            usage = data.get("usage")
            if usage:
                yield StreamEvent(counts=counts_from_usage(usage))

    # -- collab.protocol.TokenModel ----------------------------------------------------------------------------------

    async def complete_ids(self, ids: list[int], max_tokens: int, *, stop_ids: list[int] | None = None,
                           top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None) -> IdCompletion:
        """Continue a token-id prompt; each step has the chosen id, its logprob and the top-k alternatives."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": ids,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "logprobs": top_logprobs,
            "return_tokens_as_token_ids": True,
        }
        if stop_ids:
            body["stop_token_ids"] = stop_ids
        if seed is not None:
            body["seed"] = seed
        data = await self._post_json("/completions", body)
        choices = data.get("choices") or []
        if not choices:
            raise make_error(BackendError, f"backend '{self.name}' answered with no choices", retryable=True)
        return id_completion_from_choice(choices[0], data.get("usage"), top_logprobs)

    # -- health ------------------------------------------------------------------------------------------------------

    async def health(self) -> bool:
        """True when ``GET {base}/models`` answers 200 within 2 s."""
        try:
            resp = await self._http().get("/models", timeout=2.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200
