"""A backend for hosted providers (OpenAI, Anthropic, …) through ``litellm.acompletion``, streamed or not.

litellm is imported lazily, inside the functions that need it, so a gateway without litellm routes never pays its
import time; before that import ``LITELLM_LOCAL_MODEL_COST_MAP`` is defaulted to ``True`` so litellm reads its
bundled cost map instead of fetching one. The price comes from the config, else from ``litellm.model_cost``
(``input_cost_per_token``, ``output_cost_per_token``, ``cache_read_input_token_cost``); a model in neither is a
:class:`~gateway.errors.ConfigError` naming the backend. litellm's exceptions map onto ``gateway.errors`` as in
:mod:`gateway.backends.openai_http` (an authentication, permission or not-found refusal is a ``BackendError`` with
``retryable=False``).

What it leaves out: token-level access (hosted APIs give no token-id prompts), ``/v1/completions``, ``n > 1``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any

from gateway.backends.base import CAP_LOGPROBS, CAP_TOOLS, Backend, ChatRequest, ChatResult, StreamEvent, TokenCounts
from gateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    PromptTooLarge,
    TandemError,
)
from gateway.usage import Price

LITELLM_CAPABILITIES = frozenset({CAP_TOOLS, CAP_LOGPROBS})
# litellm reports a refused connection as InternalServerError for some providers; these words give it away.
_CONNECT_HINTS = ("Cannot connect to host", "Connect call failed", "Connection refused", "ConnectError")


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout for each error
    return litellm


def cost_map_entry(model: str, cost_map: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The cost-map entry of a LiteLLM model id: the id itself, else the id without its ``provider/`` prefix."""
    if model in cost_map:
        return cost_map[model]
    if "/" in model:
        return cost_map.get(model.split("/", 1)[1])
    return None


def price_from_entry(entry: dict[str, Any]) -> Price:
    cached = entry.get("cache_read_input_token_cost")
    return Price(float(entry.get("input_cost_per_token") or 0.0), None if cached is None else float(cached),
                 float(entry.get("output_cost_per_token") or 0.0))


def price_from_cost_map(backend: str, model: str) -> Price:
    """The model's price from litellm's bundled cost map; ConfigError naming ``backend`` if it is not there."""
    entry = cost_map_entry(model, _litellm().model_cost)
    if entry is None or "input_cost_per_token" not in entry:
        raise ConfigError(f"backends.{backend}.price: model '{model}' is not in LiteLLM's cost map; set a price",
                          param="price")
    return price_from_entry(entry)


def map_litellm_error(backend: str, exc: Exception) -> TandemError:
    """A gateway error for an exception litellm raised."""
    litellm = _litellm()
    msg = str(getattr(exc, "message", None) or exc)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return PromptTooLarge(msg)
    if isinstance(exc, litellm.Timeout):
        return BackendTimeout(f"backend '{backend}' timed out: {msg}")
    if isinstance(exc, (litellm.BadRequestError, litellm.UnprocessableEntityError, litellm.UnsupportedParamsError)):
        return InvalidRequest(msg)
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)):
        return BackendError(f"backend '{backend}' refused the call: {msg}", retryable=False)
    if isinstance(exc, litellm.RateLimitError):
        return BackendUnavailable(f"backend '{backend}' is rate limited: {msg}")
    if isinstance(exc, litellm.APIConnectionError) or any(h in msg for h in _CONNECT_HINTS):
        return BackendUnavailable(f"backend '{backend}' is unreachable: {msg}")
    return BackendError(f"backend '{backend}' failed: {msg}")


def _dump(obj: Any) -> Any:
    return obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else obj


def _counts(usage: Any) -> TokenCounts:
    if usage is None:
        return TokenCounts()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return TokenCounts(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0),
                       int(cached or 0))


class LiteLLMBackend(Backend):
    """One hosted model through LiteLLM."""

    kind = "litellm"

    def __init__(self, name: str, model: str, *, price: Price, api_base: str | None = None,
                 api_key: str | None = None, timeout_s: float = 120.0,
                 capabilities: frozenset[str] = LITELLM_CAPABILITIES):
        super().__init__(name, price, capabilities)
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, cfg: Any) -> LiteLLMBackend:
        """Build from a ``gateway.config.LiteLLMBackendConfig``; the price falls back to LiteLLM's cost map."""
        price = cfg.price.to_price() if cfg.price is not None else price_from_cost_map(cfg.name, cfg.model)
        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        return cls(cfg.name, cfg.model, price=price, api_base=cfg.api_base, api_key=api_key, timeout_s=cfg.timeout_s)

    def _kwargs(self, req: ChatRequest) -> dict[str, Any]:
        kw: dict[str, Any] = dict(req.extra) if req.extra else {}
        kw.update(model=self.model, messages=req.messages, timeout=self.timeout_s)
        if self.api_base:
            kw["api_base"] = self.api_base
        if self.api_key:
            kw["api_key"] = self.api_key
        for key in ("max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice"):
            value = getattr(req, key)
            if value is not None:
                kw[key] = value
        if req.logprobs:
            kw["logprobs"] = True
            if req.top_logprobs:
                kw["top_logprobs"] = req.top_logprobs
        if req.n != 1:
            kw["n"] = req.n
        return kw

    async def chat(self, req: ChatRequest) -> ChatResult:
        litellm = _litellm()
        try:
            resp = await litellm.acompletion(**self._kwargs(req))
        except Exception as e:  # litellm raises its own tree (and provider SDK errors); map them all
            raise map_litellm_error(self.name, e) from e
        choice = resp.choices[0]
        msg = choice.message
        message: dict[str, Any] = {"role": getattr(msg, "role", None) or "assistant", "content": msg.content}
        if getattr(msg, "tool_calls", None):
            message["tool_calls"] = [_dump(tc) for tc in msg.tool_calls]
        logprobs = _dump(getattr(choice, "logprobs", None)) if req.logprobs else None
        return ChatResult(message, choice.finish_reason, _counts(getattr(resp, "usage", None)), logprobs, self.name)

    async def stream_chat(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        litellm = _litellm()
        kw = self._kwargs(req)
        kw["stream"] = True
        kw["stream_options"] = {"include_usage": True}
        try:
            stream = await litellm.acompletion(**kw)
        except Exception as e:
            raise map_litellm_error(self.name, e) from e
        counts: TokenCounts | None = None
        try:
            async for chunk in stream:
                for c in chunk.choices or ():
                    delta = _dump(c.delta) if c.delta is not None else None
                    if delta is not None:
                        delta = {k: v for k, v in delta.items() if k in ("role", "content", "tool_calls") and v}
                    lp = _dump(getattr(c, "logprobs", None)) if req.logprobs else None
                    if delta or c.finish_reason or lp:
                        yield StreamEvent(delta or None, c.finish_reason, lp)
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    counts = _counts(usage)
        except TandemError:
            raise
        except Exception as e:
            raise map_litellm_error(self.name, e) from e
        yield StreamEvent(counts=counts or TokenCounts())
