"""A backend for any OpenAI-compatible HTTP server, tuned for vLLM: chat, completions, and token-id completions.

:class:`OpenAIHTTPBackend` keeps one pooled ``aiohttp.ClientSession`` per backend and per running event loop (made
lazily inside the loop: the backend itself may be built in another thread; a session whose loop has closed is dropped)
with keep-alive, the config's connection limit and connect timeout; each call, streaming included, has a total time
limit. The hot path builds plain dicts, sends ``orjson`` bytes and parses answers with ``orjson`` — no pydantic per
request; streams are split into SSE lines from the raw chunks (a ``data:`` line may span chunks). Streams always ask for ``stream_options.include_usage`` so
the last event carries :class:`TokenCounts` (with ``prompt_tokens_details.cached_tokens``). ``complete_ids`` speaks
``collab.protocol``: a token-id prompt to ``/v1/completions`` with ``logprobs=k`` and
``return_tokens_as_token_ids`` (vLLM then keys alternatives ``token_id:N``) and ``stop_token_ids``; ``stream_ids`` is
the same call streamed (``collab.protocol.StreamingTokenModel``), cancelled by closing it.
``ChatRequest.extra`` / ``CompletionRequest.extra`` fields go to the upstream body as they are (vLLM takes
``ignore_eos``, ``min_tokens``, ``top_k``, ``skip_special_tokens``, …).

Errors map onto ``gateway.errors``, whose classes say whether trying again may work (``retryable``: True for the
``BackendError`` branch — connection refused, timeout, upstream 5xx or 429, a stream broken midway; a refusal that
another try would not fix is raised with ``retryable=False``; client mistakes are never retryable):

- connection refused / unreachable → ``BackendUnavailable``; timeouts → ``BackendTimeout``;
- upstream 5xx → ``BackendError``; 429 → ``BackendUnavailable``; 401/403/404 → ``BackendError`` with
  ``retryable=False`` (our config is wrong);
- other upstream 4xx → ``InvalidRequest`` with upstream's message (``PromptTooLarge`` for context-length errors);
- a stream that breaks or reports an error midway → ``BackendError`` from the iterator (a stream that runs past
  the total time limit → ``BackendTimeout``).

With ``n > 1``, ``chat`` returns a :class:`~gateway.backends.base.ChatResult` with every choice in ``choices``
and ``stream_chat`` yields events carrying their choice's ``index`` (both declared in ``gateway.backends.base``).

What it leaves out: retries and fallbacks (``gateway.dispatch``), tokenizing (callers of ``complete_ids`` bring ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson
from yarl import URL

from collab.protocol import IdCompletion, StreamEnd, TokenStep
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
        return BackendError(f"backend '{backend}' failed ({status}): {msg}")
    if status == 429:
        return BackendUnavailable(f"backend '{backend}' is rate limited: {msg}")
    if status in (401, 403, 404):
        return BackendError(f"backend '{backend}' refused the call ({status}): {msg}", retryable=False)
    low = msg.lower()
    cls = PromptTooLarge if any(h in low for h in _CONTEXT_HINTS) else InvalidRequest
    return cls(msg)


def transport_error(backend: str, exc: BaseException) -> TandemError:
    """The error for an aiohttp / socket failure (or a total-time overrun)."""
    if isinstance(exc, TimeoutError):  # aiohttp's connect/read timeouts derive from it too
        return BackendTimeout(f"backend '{backend}' timed out")
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return BackendUnavailable(f"backend '{backend}' is unreachable: {exc}")
    return BackendError(f"backend '{backend}' connection failed: {exc!r}")


def stream_error(backend: str, err: Any, payload: bytes) -> TandemError:
    """The error for an error event inside a stream (vLLM reports request validation errors this way, with a
    status ``code``): 4xx codes map like an HTTP status, anything else is a :class:`BackendError`."""
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code < 600:
        return status_error(backend, code, payload)
    return BackendError(f"backend '{backend}' stream failed: {upstream_message(payload)}")


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


_DONE: Any = object()  # the [DONE] marker of a stream


def _dumps_str(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read what follows ``[DONE]`` (the chunked terminator) so the connection goes back to the pool."""
    if not resp.content.at_eof():
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await resp.content.read()


def _drop_session(session: aiohttp.ClientSession) -> None:
    """Forget a session whose loop is gone (nothing can be awaited there): mark its connector and it closed."""
    connector = session.connector
    session.detach()
    if connector is not None:
        with contextlib.suppress(Exception):
            connector._close()  # noqa: SLF001 - the sync half of close(); safe on a closed loop


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
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._health_timeout = aiohttp.ClientTimeout(total=2.0, sock_connect=min(connect_timeout_s, 2.0))
        self._urls: dict[str, URL] = {}
        # One session per running loop; the last one used is cached for the hot path.
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, aiohttp.ClientSession | None] = (None, None)

    @classmethod
    def from_config(cls, cfg: Any) -> OpenAIHTTPBackend:
        """Build from a ``gateway.config.OpenAIBackendConfig``."""
        api_key = cfg.api_key or (os.environ.get(cfg.api_key_env) if cfg.api_key_env else None)
        return cls(cfg.name, cfg.base_url, model=cfg.model, price=cfg.price.to_price() if cfg.price else Price(),
                   api_key=api_key, timeout_s=cfg.timeout_s, connect_timeout_s=cfg.connect_timeout_s,
                   max_connections=cfg.max_connections, tokenizer=cfg.tokenizer, kind=cfg.kind)

    # -- the pooled session -----------------------------------------------------------------------------------------

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    def _http(self) -> aiohttp.ClientSession:
        """The pooled session of the running event loop (a new loop — e.g. another ``asyncio.run`` — gets its own)."""
        loop = asyncio.get_running_loop()
        last_loop, session = self._last
        if last_loop is loop and session is not None and not session.closed:
            return session
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for stale in [lp for lp in self._sessions if lp.is_closed()]:
                _drop_session(self._sessions.pop(stale))
            connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=30.0, ttl_dns_cache=300)
            session = aiohttp.ClientSession(connector=connector, headers=self._headers, timeout=self._timeout,
                                            json_serialize=_dumps_str, raise_for_status=False)
            self._sessions[loop] = session
        self._last = (loop, session)
        return session

    async def aclose(self) -> None:
        """Close this loop's session; sessions of other loops are closed on their loop (or dropped if it is gone)."""
        loop = asyncio.get_running_loop()
        sessions, self._sessions, self._last = self._sessions, {}, (None, None)
        for owner, session in sessions.items():
            if owner is loop:
                with contextlib.suppress(Exception):
                    await session.close()
            elif owner.is_running() and not owner.is_closed():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(session.close(), owner)
            else:
                _drop_session(session)

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body and return the parsed JSON answer, mapping failures to gateway errors."""
        try:
            async with self._http().post(self._url(path), data=orjson.dumps(body)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise transport_error(self.name, e) from e
        if status >= 400:
            raise status_error(self.name, status, raw)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BackendError(f"backend '{self.name}' sent invalid JSON") from e

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST with ``stream: true`` and yield each SSE ``data:`` object until ``[DONE]``."""
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        started = False
        try:
            async with self._http().post(self._url(path), data=orjson.dumps(body)) as resp:
                if resp.status >= 400:
                    raise status_error(self.name, resp.status, await resp.read())
                started = True
                rest = b""
                async for chunk in resp.content.iter_any():
                    if rest:
                        chunk = rest + chunk
                    lines = chunk.splitlines()
                    # The last piece is incomplete unless the chunk ended a line; keep it for the next chunk.
                    rest = b"" if chunk.endswith((b"\n", b"\r")) else lines.pop()
                    for line in lines:
                        data = self._sse_data(line)
                        if data is None:
                            continue
                        if data is _DONE:
                            await _drain(resp)
                            return
                        yield data
                if rest and self._sse_data(rest) is _DONE:
                    return
        except TimeoutError as e:
            raise transport_error(self.name, e) from e
        except (aiohttp.ClientError, OSError) as e:
            if started:
                raise BackendError(f"backend '{self.name}' stream broke: {e!r}") from e
            raise transport_error(self.name, e) from e
        except orjson.JSONDecodeError as e:
            raise BackendError(f"backend '{self.name}' sent invalid stream data") from e
        raise BackendError(f"backend '{self.name}' stream ended without [DONE]")

    def _sse_data(self, line: bytes) -> Any:
        """The JSON object of one SSE line, ``_DONE`` for ``[DONE]``, None for other lines (``event:``, blank,
        comments). Raises for an error event."""
        if not line.startswith(b"data:"):
            return None
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return _DONE
        data = orjson.loads(payload)
        if "error" in data and "choices" not in data:
            raise stream_error(self.name, data["error"], payload)
        return data

    # -- chat --------------------------------------------------------------------------------------------------------

    def _sampling_body(self, req: ChatRequest | CompletionRequest, **first: Any) -> dict[str, Any]:
        """Pass-through extras, the model, ``first`` (messages or prompt), then the sampling fields that are set."""
        body: dict[str, Any] = dict(req.extra) if req.extra else {}
        body["model"] = self.model
        body.update(first)
        for name in ("max_tokens", "temperature", "top_p", "seed"):
            value = getattr(req, name)
            if value is not None:
                body[name] = value
        if req.stop:
            body["stop"] = req.stop
        return body

    def _chat_body(self, req: ChatRequest) -> dict[str, Any]:
        body = self._sampling_body(req, messages=req.messages)
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
            raise BackendError(f"backend '{self.name}' answered with no choices")
        results = [ChatResult(_message_of(c), c.get("finish_reason"), counts, c.get("logprobs"), self.name)
                   for c in sorted(choices, key=lambda c: c.get("index", 0))]
        if len(results) == 1:
            return results[0]
        first = results[0]
        return ChatResult(first.message, first.finish_reason, counts, first.logprobs, self.name, choices=results)

    async def stream_chat(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        multi = req.n != 1
        async for data in self._stream("/chat/completions", self._chat_body(req)):
            for c in data.get("choices") or ():
                delta = c.get("delta")
                ev_delta = _clean(delta) if delta else None
                if multi:
                    yield StreamEvent(ev_delta, c.get("finish_reason"), c.get("logprobs"), index=c.get("index", 0))
                else:
                    yield StreamEvent(ev_delta, c.get("finish_reason"), c.get("logprobs"))
            usage = data.get("usage")
            if usage:
                yield StreamEvent(counts=counts_from_usage(usage))

    # -- completions -------------------------------------------------------------------------------------------------

    def _completion_body(self, req: CompletionRequest) -> dict[str, Any]:
        body = self._sampling_body(req, prompt=req.prompt)
        if req.logprobs is not None:
            body["logprobs"] = req.logprobs
        if req.echo:
            body["echo"] = True
        return body

    async def complete(self, req: CompletionRequest) -> CompletionResult:
        data = await self._post_json("/completions", self._completion_body(req))
        choices = data.get("choices") or []
        if not choices:
            raise BackendError(f"backend '{self.name}' answered with no choices")
        c = choices[0]
        return CompletionResult(c.get("text") or "", c.get("finish_reason"), counts_from_usage(data.get("usage")),
                                c.get("logprobs"), self.name)

    async def stream_complete(self, req: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
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
        data = await self._post_json("/completions", self._ids_body(ids, max_tokens, stop_ids, top_logprobs,
                                                                     temperature, seed))
        choices = data.get("choices") or []
        if not choices:
            raise BackendError(f"backend '{self.name}' answered with no choices")
        return id_completion_from_choice(choices[0], data.get("usage"), top_logprobs)

    async def stream_ids(self, ids: list[int], max_tokens: int, *, stop_ids: list[int] | None = None,
                         top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None
                         ) -> AsyncGenerator[TokenStep | StreamEnd, None]:
        """``collab.protocol.StreamingTokenModel``: the steps of a token-id continuation as the server writes them,
        then a ``StreamEnd`` with its counts. Closing the generator early closes the connection, and vLLM aborts
        the request."""
        finish = "length"
        body = self._ids_body(ids, max_tokens, stop_ids, top_logprobs, temperature, seed)
        async for data in self._stream("/completions", body):
            for c in data.get("choices") or ():
                for step in id_completion_from_choice(c, None, top_logprobs).steps:
                    yield step
                if c.get("finish_reason"):
                    finish = "length" if c["finish_reason"] == "length" else "stop"
            usage = data.get("usage")
            if usage:
                counts = counts_from_usage(usage)
                yield StreamEnd(finish, counts.prompt_tokens, counts.cached_tokens)

    def _ids_body(self, ids: list[int], max_tokens: int, stop_ids: list[int] | None, top_logprobs: int,
                  temperature: float, seed: int | None) -> dict[str, Any]:
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
        return body

    # -- health ------------------------------------------------------------------------------------------------------

    async def health(self) -> bool:
        """True when ``GET {base}/models`` answers 200 within 2 s."""
        try:
            async with self._http().get(self._url("/models"), timeout=self._health_timeout) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
