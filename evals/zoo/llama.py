"""A factory for small Llama models on the zoo tokenizer, saved as HF folders that transformers and vLLM load.

:func:`make_llama` builds a ``LlamaForCausalLM`` with a fixed seed (so the same arguments give the same weights),
writes it as float32 safetensors with ``config.json`` and ``generation_config.json`` whose bos/eos/pad ids are the
zoo tokenizer's, and puts the tokenizer files beside it. vLLM's CPU attention backend refuses head dimensions below
32, so ``hidden / heads`` must be an integer ≥ 32.

What it leaves out: training (the zoo trainers load these folders and overwrite the weights).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evals.zoo.tokenizer import BOS_ID, END_ID, PAD_ID, VOCAB_SIZE, build_tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MIN_HEAD_DIM = 32


def llama_config_kwargs(*, layers: int, hidden: int, heads: int, intermediate: int | None = None,
                        max_position: int = 1024) -> dict:
    """The ``LlamaConfig`` fields for a zoo model; raises ValueError for shapes vLLM-CPU cannot serve."""
    if layers < 1 or hidden < 1 or heads < 1:
        raise ValueError(f"layers, hidden and heads must be positive (got {layers}, {hidden}, {heads})")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    head_dim = hidden // heads
    if head_dim < MIN_HEAD_DIM:
        raise ValueError(f"head_dim = hidden/heads = {head_dim} < {MIN_HEAD_DIM}: vLLM's CPU attention refuses it")
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": hidden,
        "intermediate_size": intermediate if intermediate is not None else 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": head_dim,
        "max_position_embeddings": max_position,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": BOS_ID,
        "eos_token_id": END_ID,
        "pad_token_id": PAD_ID,
    }


def make_llama(out_dir: str | Path, *, layers: int, hidden: int, heads: int, intermediate: int | None = None,
               seed: int = 0, tokenizer_dir: str | Path | None = None, max_position: int = 1024) -> Path:
    """Write a randomly initialised (seeded) Llama model and the zoo tokenizer into ``out_dir``; return the path.

    ``tokenizer_dir``: copy the tokenizer files from there (default: build the zoo tokenizer in place)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**llama_config_kwargs(layers=layers, hidden=hidden, heads=heads, intermediate=intermediate,
                                            max_position=max_position))
    cfg.dtype = "float32"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg).to(torch.float32)
        # Re-draw every weight from our own generator so the result does not depend on transformers' init order.
        with torch.no_grad():
            for name, p in sorted(model.named_parameters()):
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * cfg.initializer_range)
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=END_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out)
    if tokenizer_dir is None:
        build_tokenizer(out)
    else:
        for f in TOKENIZER_FILES:
            shutil.copyfile(Path(tokenizer_dir) / f, out / f)
    return out
