"""The in-process backend's loading helpers on the tiny zoo Llama: where a model is loaded from (and the errors when
it is not there), device and dtype choice, and what the loaded model says (EOS ids, context, vocabulary). The
packaged SmolLM2 conversion runs in ``test_local.py`` (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gateway.backends.local_model import (
    context_limit,
    find_eos_ids,
    load_pretrained,
    resolve_device,
    resolve_dtype,
    resolve_model_folder,
    vocab_size,
)
from gateway.errors import BackendError


def test_resolve_model_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model_folder(str(tiny_model_dir), None) == (tiny_model_dir, None)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    assert resolve_model_folder(str(gguf), None) == (tmp_path, "m.gguf")
    with pytest.raises(BackendError, match="GGUF file not found"):
        resolve_model_folder(str(tmp_path / "missing.gguf"), None)
    with pytest.raises(BackendError, match="no config.json"):
        resolve_model_folder(str(tmp_path), None)
    with pytest.raises(BackendError, match="unknown model package"):
        resolve_model_folder(None, "llm-other")


def test_device_and_dtype() -> None:
    cpu = resolve_device("cpu")
    assert cpu == torch.device("cpu") and resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16


def test_what_the_loaded_model_says(tiny_model_dir: Path) -> None:
    tok, model = load_pretrained(tiny_model_dir, None, torch.float32, torch.device("cpu"))
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert vocab_size(model) == len(tok)
    assert tok.convert_tokens_to_ids("<|end|>") in find_eos_ids(tok, model)
    mpe = int(model.config.max_position_embeddings)
    assert context_limit(model, mpe + 100) == mpe and context_limit(model, 8) == 8
