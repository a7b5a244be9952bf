"""gateway/backends/base.py: the declared result and event types (n > 1 included) and the Backend hooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from gateway.backends.base import Backend, ChatRequest, ChatResult, StreamEvent, TokenCounts
from gateway.usage import Price


class Two(Backend):
    """Streams two pieces of one answer."""

    async def stream_chat(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        yield StreamEvent(delta={"role": "assistant"})
        yield StreamEvent(delta={"content": "a"})
        yield StreamEvent(delta={"content": "b"}, finish_reason="stop", counts=TokenCounts(2, 2))


def test_load_is_a_declared_no_op_hook() -> None:
    b = Two("two", Price())
    assert asyncio.run(b.load()) is None
    res = asyncio.run(b.chat(ChatRequest([{"role": "user", "content": "hi"}], caller_key_id="k1")))
    assert res.message == {"role": "assistant", "content": "ab"} and res.counts == TokenCounts(2, 2)
    assert res.all_choices() == [res] and res.choices is None


def test_n_choices_are_declared_fields() -> None:
    c0 = ChatResult({"role": "assistant", "content": "x"}, "stop", TokenCounts())
    c1 = ChatResult({"role": "assistant", "content": "y"}, "length", TokenCounts())
    multi = ChatResult(c0.message, c0.finish_reason, TokenCounts(1, 2), choices=[c0, c1])
    assert multi.all_choices() == [c0, c1]
    assert StreamEvent().index == 0 and StreamEvent({"content": "y"}, index=1).index == 1


def test_per_chunk_types_are_slotted() -> None:
    # One StreamEvent per streamed piece: slots keep it small and fast (bench: python -m bench.gateway_overhead).
    for obj in (StreamEvent(), TokenCounts(), ChatResult({}, None, TokenCounts())):
        assert not hasattr(obj, "__dict__")
