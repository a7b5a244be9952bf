"""Trained decoder layers laid over a base model: one small safetensors file of K layers, assembled once into an
ordinary HF folder that transformers, the in-process backend and a vLLM server all load.

A layers file holds ``model.layers.<i>.<tensor>`` for ``i`` in ``0..K-1`` (every tensor of the base model's layer
``i``, same shapes; any float dtype, cast to the base's). A matrix may be stored as int8 rows instead, beside
``<tensor>.scale`` (float32, one per row): :func:`quantize_rows` writes that pair, :func:`dequantize_rows` reads it
back (``q * scale``), half the bytes of bf16. :func:`assemble_layered_folder` writes the base model cut to
those K layers, with the file's tensors in place of the base's first K layers, into
``<cache>/models/<name>-<short hash>`` (``<name>``: the layers file's folder when the file is called
``layers.safetensors``, else its stem; the hash covers the file's bytes and the base folder): ``config.json`` with
``num_hidden_layers = K``, ``model.safetensors`` (the base's embeddings, final norm and head kept as they are), and
every other file of the base folder (tokenizer, chat template, generation config) copied. The folder is written to a
temporary name and renamed, so concurrent callers see it whole or not at all.

What it leaves out: where the base folder comes from (:func:`gateway.backends.local_model.resolve_model_folder`),
training the layers (``evals.zoo.smol_draft``), GGUF bases (the base must be an HF folder with safetensors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from gateway.errors import BackendError
from gateway.paths import write_folder_once

log = logging.getLogger(__name__)

LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
WEIGHTS = "model.safetensors"
HASH_CHARS = 12
SCALE_SUFFIX = ".scale"
INT8_MAX = 127


def quantize_rows(t: Any) -> tuple[Any, Any]:
    """Symmetric int8 per row of a matrix: ``(q, scale)`` with ``scale = max|row| / 127`` (float32; 1 for an all-zero
    row) and ``q = round(row / scale)``, so every entry is within ``scale / 2`` of ``q * scale``."""
    import torch

    w = t.detach().float()
    scale = w.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_rows(q: Any, scale: Any) -> Any:
    """The float32 matrix an int8 ``(q, scale)`` pair stands for."""
    return q.float() * scale.float()[:, None]


def quantized_layer_tensors(tensors: dict[str, Any], keep_dtype: Any) -> dict[str, Any]:
    """A layers file's tensors with every matrix as an int8 ``(q, <key>.scale)`` pair and the rest (norm vectors)
    cast to ``keep_dtype``."""
    out: dict[str, Any] = {}
    for key, t in tensors.items():
        if t.dim() == 2:
            out[key], out[key + SCALE_SUFFIX] = quantize_rows(t)
        else:
            out[key] = t.detach().to(keep_dtype).contiguous()
    return out


def dequantized_tensors(tensors: dict[str, Any], source: Path) -> dict[str, Any]:
    """``tensors`` with every int8 ``(q, <key>.scale)`` pair replaced by its float32 matrix; BackendError for a
    scale without its int8 matrix."""
    import torch

    out = dict(tensors)
    for key in [k for k in tensors if k.endswith(SCALE_SUFFIX)]:
        name = key[: -len(SCALE_SUFFIX)]
        q = out.get(name)
        if q is None or q.dtype != torch.int8 or q.dim() != 2 or tuple(out[key].shape) != (q.shape[0],):
            raise BackendError(f"layers file {source} holds '{key}' without an int8 matrix '{name}' of as many rows")
        out[name] = dequantize_rows(q, out.pop(key))
    return out


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def layered_folder_name(layers: Path, base: Path) -> str:
    """``<name>-<short hash>`` of the assembled folder for ``layers`` over ``base`` (see the module docstring)."""
    h = hashlib.sha256(file_sha256(layers).encode() + b"\0" + str(base.resolve()).encode())
    name = layers.parent.name if layers.stem == "layers" else layers.stem
    return f"{name or 'layered'}-{h.hexdigest()[:HASH_CHARS]}"


def read_layers(layers: Path) -> dict[int, dict[str, object]]:
    """``{layer index: {tensor name within the layer: tensor}}`` of a layers file, int8 pairs dequantized;
    BackendError when the file is missing, not safetensors, holds other tensors, or its layer indices are not
    ``0..K-1``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not layers.is_file():
        raise BackendError(f"layers file not found: {layers}")
    try:
        tensors = dequantized_tensors(load_file(str(layers)), layers)
    except (SafetensorError, OSError, ValueError) as e:
        raise BackendError(f"not a safetensors file of decoder layers: {layers} ({e})") from e
    by_layer: dict[int, dict[str, object]] = {}
    for key, t in tensors.items():
        m = LAYER_KEY.match(key)
        if m is None:
            raise BackendError(f"layers file {layers} holds '{key}', not a decoder layer tensor "
                               "(expected model.layers.<i>.<name>)")
        by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = t
    if not by_layer:
        raise BackendError(f"layers file {layers} holds no decoder layers")
    if sorted(by_layer) != list(range(len(by_layer))):
        raise BackendError(f"layers file {layers} holds layers {sorted(by_layer)}; expected 0..{len(by_layer) - 1}")
    return by_layer


def check_layers(by_layer: dict[int, dict[str, object]], base_tensors: dict[str, object], base_layers: int,
                 source: Path) -> None:
    """BackendError unless every layer has exactly the base's tensors of that layer, with the same shapes, and
    there are at most as many layers as the base has."""
    k = len(by_layer)
    if k > base_layers:
        raise BackendError(f"layers file {source} holds {k} layers; the base model has only {base_layers}")
    for i, got in by_layer.items():
        want = {LAYER_KEY.match(key).group(2): t for key, t in base_tensors.items()  # type: ignore[union-attr]
                if key.startswith(f"model.layers.{i}.")}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            raise BackendError(f"layers file {source}: layer {i} " + "; ".join(
                p for p in (f"lacks {missing}" if missing else "", f"has unknown {extra}" if extra else "") if p))
        for name, t in got.items():
            if tuple(t.shape) != tuple(want[name].shape):  # type: ignore[attr-defined]
                raise BackendError(f"layers file {source}: model.layers.{i}.{name} has shape "
                                   f"{tuple(t.shape)}, the base's is {tuple(want[name].shape)}")  # type: ignore
            if not t.is_floating_point():  # type: ignore[attr-defined]
                raise BackendError(f"layers file {source}: model.layers.{i}.{name} is not a float tensor")


def assemble_layered_folder(base: Path, layers: Path, dest_root: Path) -> Path:
    """The HF folder of ``base`` cut to the K layers of ``layers`` with those tensors in place (built once under
    ``dest_root``; an existing complete folder is returned as it is)."""
    from safetensors.torch import load_file, save_file

    layers = Path(layers).expanduser()
    if not (base / "config.json").is_file() or not (base / WEIGHTS).is_file():
        raise BackendError(f"trained layers need an HF base folder with {WEIGHTS}: {base}")
    by_layer = read_layers(layers)
    dest = dest_root / layered_folder_name(layers, base)
    if (dest / "config.json").is_file():
        return dest
    config = json.loads((base / "config.json").read_text())
    base_layers = int(config["num_hidden_layers"])
    base_tensors = load_file(str(base / WEIGHTS))
    check_layers(by_layer, base_tensors, base_layers, layers)
    k = len(by_layer)
    out = {}
    for key, t in base_tensors.items():
        m = LAYER_KEY.match(key)
        if m is None:
            out[key] = t.contiguous()
        elif int(m.group(1)) < k:
            out[key] = by_layer[int(m.group(1))][m.group(2)].to(t.dtype).contiguous()  # type: ignore[attr-defined]
    config["num_hidden_layers"] = k
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = config["layer_types"][:k]

    def fill(tmp: Path) -> None:
        for f in base.iterdir():
            if f.is_file() and f.name not in (WEIGHTS, "config.json"):
                shutil.copy2(f, tmp / f.name)
        save_file(out, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    write_folder_once(dest, fill)
    log.info("assembled %d trained layers from %s over %s into %s", k, layers, base, dest)
    return dest
