"""Prices and usage: what each model was asked and wrote, and what it cost.

One function, :func:`price_usage`, turns token counts into dollars for streamed and non-streamed requests alike,
so the two can never disagree. A request's :class:`Usage` lists every model it touched (a collaboration touches
several). What it leaves out: where prices come from (config or LiteLLM's cost map, see ``gateway.config`` and
``gateway.backends.litellm_backend``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Price:
    """Dollars per token: prompt, cached prompt, completion."""

    input: float = 0.0
    cached_input: float | None = None  # None: cached tokens cost the same as other prompt tokens
    output: float = 0.0

    @classmethod
    def per_million(cls, input: float = 0.0, output: float = 0.0, cached_input: float | None = None) -> Price:
        return cls(input / 1e6, None if cached_input is None else cached_input / 1e6, output / 1e6)


@dataclass
class ModelUsage:
    """One model's share of one request."""

    model: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "seconds": round(self.seconds, 6),
        }


def price_usage(price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
    """Dollars for one model call. Cached prompt tokens are a subset of ``prompt_tokens``."""
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    return (prompt_tokens - cached) * price.input + cached * cached_rate + completion_tokens * price.output


@dataclass
class Usage:
    """A request's usage: one :class:`ModelUsage` per model it touched, in first-touched order."""

    models: list[ModelUsage] = field(default_factory=list)

    def for_model(self, model: str) -> ModelUsage:
        for m in self.models:
            if m.model == model:
                return m
        m = ModelUsage(model)
        self.models.append(m)
        return m

    def add(self, model: str, price: Price, prompt_tokens: int = 0, completion_tokens: int = 0,
            cached_tokens: int = 0, seconds: float = 0.0) -> ModelUsage:
        """Add one call's tokens to ``model`` and price them."""
        m = self.for_model(model)
        m.prompt_tokens += prompt_tokens
        m.cached_tokens += cached_tokens
        m.completion_tokens += completion_tokens
        m.seconds += seconds
        m.cost_usd += price_usage(price, prompt_tokens, completion_tokens, cached_tokens)
        return m

    @property
    def prompt_tokens(self) -> int:
        return sum(m.prompt_tokens for m in self.models)

    @property
    def completion_tokens(self) -> int:
        return sum(m.completion_tokens for m in self.models)

    @property
    def cached_tokens(self) -> int:
        return sum(m.cached_tokens for m in self.models)

    @property
    def cost_usd(self) -> float:
        return sum(m.cost_usd for m in self.models)

    def openai_usage(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object (totals over all models)."""
        p, c = self.prompt_tokens, self.completion_tokens
        return {
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def to_list(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.models]
