"""OpenAI request bodies: validation, and conversion into what backends take.

Bodies are parsed with orjson and validated with pydantic models that mirror the OpenAI API (unknown fields are
kept and passed through to backends that accept vendor extensions, such as vLLM's ``ignore_eos``). A validation
failure becomes :class:`~gateway.errors.InvalidRequest` naming the field. The models double as the OpenAPI schema.

What it leaves out: responses (built as plain dicts in ``gateway.pipeline`` for speed) and route capabilities
(checked in ``gateway.dispatch``).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from gateway.backends.base import ChatRequest, CompletionRequest
from gateway.errors import InvalidRequest


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: bool = False


# Fields the gateway interprets itself; every other field is forwarded to the backend as an extension.
_KNOWN = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
    "stream", "stream_options", "logprobs", "top_logprobs", "tools", "tool_choice", "user", "prompt", "echo",
    "parallel_tool_calls",
}


def _stop_list(v: str | list[str] | None) -> list[str] | None:
    if v is None:
        return None
    stops = [v] if isinstance(v, str) else v
    if len(stops) > 4:
        raise ValueError("at most 4 stop sequences")
    if any(s == "" for s in stops):
        raise ValueError("stop sequences must be non-empty")
    return stops


class _Sampling(_Open):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> list[str] | None:
        return _stop_list(v)

    def extras(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if k not in _KNOWN}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    _raw_messages: list[dict[str, Any]] | None = PrivateAttr(None)

    def to_backend(self, default_max_tokens: int) -> ChatRequest:
        # The validated body's own message dicts (set by `validate`), not a re-dump of every message: this runs per
        # request, on the hot path that `python -m bench.gateway_overhead` measures.
        msgs = self._raw_messages or [m.model_dump(exclude_none=True) for m in self.messages]
        return ChatRequest(
            messages=msgs,
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,  # type: ignore[arg-type]  # normalized to a list by the validator
            seed=self.seed,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            tools=self.tools,
            tool_choice=self.tool_choice,
            n=self.n,
            extra=self.extras(),
        )


class CompletionRequestBody(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[int] | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    max_tokens: int | None = Field(16, ge=1)

    def to_backend(self, default_max_tokens: int) -> CompletionRequest:
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise InvalidRequest("a list of several prompts is not supported; send one request per prompt",
                                     param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, list) and not prompt:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        return CompletionRequest(
            prompt=prompt, max_tokens=self.max_tokens or default_max_tokens, temperature=self.temperature,
            top_p=self.top_p, stop=self.stop, seed=self.seed, logprobs=self.logprobs,  # type: ignore[arg-type]
            echo=self.echo, extra=self.extras(),
        )


class FeedbackBody(BaseModel):
    """``POST /v1/feedback``: attach an outcome to a logged request."""

    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=128)
    score: float = Field(ge=0, le=1)
    label: str | None = Field(None, max_length=256)


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; invalid JSON or UTF-8 is a 400."""
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from None


def validate(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` against ``model``; the first error becomes a 400 that names its field."""
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"] if not (isinstance(x, str) and x in _UNION_TAGS)]
        param = ".".join(loc) or None
        msg = err["msg"]
        raise InvalidRequest(f"{param}: {msg}" if param else msg, param=param) from None
    if isinstance(obj, ChatCompletionRequest):
        obj._raw_messages = data["messages"]
    return obj


# pydantic puts union-member names into error locations; they mean nothing to a client.
_UNION_TAGS = {"str", "list[str]", "list[int]", "list[ContentPart]", "function-after[_check_stop(), union[str,list[str]]]"}
