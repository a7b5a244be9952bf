"""``tandem train r2r|arbitrage|fusionroute`` end to end on tiny random models (a few examples), each file loadable as
a strategy through ``build_from_artifact`` (as a gateway route builds it); τ choice for Arbitrage; zoo-name lookup."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
import torch

from collab.inproc import HFModel
from collab.registry import default_strategy_registry
from collab.session import Session
from evals import collab_tasks as tasks
from evals.collab_train import choose_step_tau, main, model_dir, prompt_ids
from evals.zoo.tokenizer import END_ID, decode, encode


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path) -> Path:
    """A zoo folder of tiny random models named like the real zoo."""
    from evals.zoo.llama import make_llama

    root = tmp_path_factory.mktemp("zoo")
    for i, name in enumerate(("small", "large")):
        make_llama(root / name, layers=1 + i, hidden=64, heads=2, seed=i, tokenizer_dir=zoo_tokenizer_dir)
    return root


def train(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def generate(strategy, models: dict[str, HFModel], n: int = 12):
    sess = Session(models, encode("3+4="), stop_ids=[END_ID], decode=decode)
    return asyncio.run(strategy.run(sess, n))


def test_model_lookup_uses_the_zoo_folder(zoo: Path, tmp_path: Path) -> None:
    assert model_dir("small", zoo) == zoo / "small"
    assert model_dir(str(zoo / "large")) == zoo / "large"
    with pytest.raises(SystemExit, match="not in the zoo"):
        model_dir("nope", tmp_path)


def test_train_r2r_end_to_end(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r2r.pt"
    res = train(capsys, "r2r", "--slm", "small", "--llm", "large", "--suite", "arithmetic", "--out", str(out),
                "--zoo", str(zoo), "--limit", "3", "--max-tokens", "10", "--epochs", "2", "--quiet")
    assert out.stat().st_size == res["bytes"] < 2_000_000
    assert res["train_positions"] + res["val_positions"] >= 10
    strat = default_strategy_registry().build_from_artifact("r2r", str(out), slm="small", llm="large")
    assert strat.tau == pytest.approx(res["tau"])
    models = {"small": HFModel("small", zoo / "small"), "large": HFModel("large", zoo / "large")}
    gen = generate(strat, models)
    assert len(gen.output) >= 1 and set(gen.provenance) <= {"small", "large"}
    assert strat.positions == len(gen.output) and strat.routed == gen.provenance.count("large")


def test_train_r2r_labels_file_and_skip(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --skip 2 --limit 3 labels train examples 2..4: the samples of examples 2..4 of a --limit 5 run, renumbered
    args = ["r2r", "--slm", "small", "--llm", "large", "--suite", "arithmetic", "--zoo", str(zoo),
            "--max-tokens", "10", "--epochs", "2", "--quiet"]
    whole, part = tmp_path / "whole.labels", tmp_path / "part.labels"
    train(capsys, *args, "--limit", "5", "--labels", str(whole), "--out", str(tmp_path / "a.pt"))
    first = train(capsys, *args, "--skip", "2", "--limit", "3", "--labels", str(part), "--out", str(tmp_path / "b.pt"))
    w, p = torch.load(whole, weights_only=False), torch.load(part, weights_only=False)
    assert p["key"]["skip"] == 2 and p["key"]["limit"] == 3 and w["key"]["skip"] == 0
    tail = [s for s in w["samples"] if s.example >= 2]
    assert tail and [(s.example - 2, s.position, s.label, s.signals.token_id) for s in tail] == [
        (s.example, s.position, s.label, s.signals.token_id) for s in p["samples"]]
    assert torch.equal(torch.stack([s.signals.top for s in tail]), torch.stack([s.signals.top for s in p["samples"]]))
    # the same command reads the file instead of labelling: the large model is not even looked up
    bare = tmp_path / "zoo-without-large"
    bare.mkdir()
    (bare / "small").symlink_to(zoo / "small")
    again = train(capsys, *[a if a != str(zoo) else str(bare) for a in args], "--skip", "2", "--limit", "3",
                  "--labels", str(part), "--out", str(tmp_path / "c.pt"))
    assert again["tau"] == first["tau"] and again["val_positions"] == first["val_positions"]
    with pytest.raises(SystemExit, match="labelled with other settings"):
        main([*args, "--skip", "1", "--limit", "3", "--labels", str(part), "--out", str(tmp_path / "d.pt")])


def test_train_r2r_along_answers(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --along FILE labels along what R2R writes with that router; at --along-tau 0 the large model writes every
    # token, so the answers are its own and the labels are the plain command's
    args = ["r2r", "--slm", "small", "--llm", "large", "--suite", "arithmetic", "--zoo", str(zoo),
            "--max-tokens", "10", "--epochs", "2", "--quiet", "--limit", "4", "--cont-slack", "3"]
    plain, first = tmp_path / "plain.labels", tmp_path / "first.pt"
    train(capsys, *args, "--labels", str(plain), "--out", str(first))
    along = tmp_path / "along.labels"
    train(capsys, *args, "--along", str(first), "--along-tau", "0", "--labels", str(along), "--out",
          str(tmp_path / "along.pt"))
    a, b = torch.load(plain, weights_only=False), torch.load(along, weights_only=False)
    assert b["key"]["along"] == str(first) and b["key"]["along_tau"] == 0
    with pytest.raises(SystemExit, match="labelled with other settings"):  # the plain command does not take them
        main([*args, "--labels", str(along), "--out", str(tmp_path / "plain-again.pt")])
    assert a["samples"] and [(s.example, s.position, s.label) for s in b["samples"]] == [
        (s.example, s.position, s.label) for s in a["samples"]]
    # at τ 1 the small model writes every token: its own greedy answers, labelled along them (its top token at each
    # position is then the answer's next token, which along the large model's answers it is not everywhere)
    never = tmp_path / "never.labels"
    train(capsys, *args, "--along", str(first), "--along-tau", "1", "--labels", str(never), "--out",
          str(tmp_path / "never.pt"))
    n = torch.load(never, weights_only=False)["samples"]
    assert [s.signals.token_id for s in n] != [s.signals.token_id for s in a["samples"]]


def test_train_r2r_different_labels_and_token_vectors(zoo: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # --label different: every position where the small model's top token is not the large model's answer token is
    # positive; the key says so (divergent labels of the same examples are another file); --token-vectors trains the
    # token table through the small model's embeddings, and both are recorded in the router file
    args = ["r2r", "--slm", "small", "--llm", "large", "--suite", "arithmetic", "--zoo", str(zoo),
            "--max-tokens", "10", "--epochs", "2", "--quiet", "--limit", "4"]
    labels_file, out = tmp_path / "different.labels", tmp_path / "different.pt"
    train(capsys, *args, "--label", "different", "--token-vectors", "--labels", str(labels_file), "--out", str(out))
    saved = torch.load(labels_file, weights_only=False)
    assert saved["key"]["label"] == "different"
    small, large = HFModel("small", zoo / "small"), HFModel("large", zoo / "large")
    examples = tasks.task_examples("arithmetic", "train", 4)
    for s in saved["samples"]:
        prompt = prompt_ids(small.tokenizer, examples[s.example].prompt)
        answer = asyncio.run(large.complete_ids(prompt, 10, stop_ids=sorted(small.eos_ids))).token_ids
        assert s.signals.token_id == int(torch.argmax(small.next_logits(prompt + answer[:s.position])))
        assert s.label == int(s.signals.token_id != answer[s.position])
    blob = torch.load(out, weights_only=False)
    assert blob["label"] == "different" and blob["token_vectors"] is True
    assert default_strategy_registry().build_from_artifact("r2r", str(out), slm="small", llm="large").router
    with pytest.raises(SystemExit, match="labelled with other settings"):
        main([*args, "--labels", str(labels_file), "--out", str(tmp_path / "divergent.pt")])


def test_train_r2r_oracle_labels(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --label oracle: samples along the oracle's answers, positive where the large model wrote; a positive is always
    # a position where the small model's top token was not the token written; --along makes no sense with it
    args = ["r2r", "--slm", "small", "--llm", "large", "--suite", "arithmetic", "--zoo", str(zoo),
            "--max-tokens", "10", "--epochs", "2", "--quiet", "--limit", "4"]
    labels_file, out = tmp_path / "oracle.labels", tmp_path / "oracle.pt"
    res = train(capsys, *args, "--label", "oracle", "--labels", str(labels_file), "--out", str(out))
    saved = torch.load(labels_file, weights_only=False)
    assert saved["key"]["label"] == "oracle" and torch.load(out, weights_only=False)["label"] == "oracle"
    assert res["train_positions"] + res["val_positions"] == len(saved["samples"]) > 0
    small = HFModel("small", zoo / "small")
    examples = tasks.task_examples("arithmetic", "train", 4)
    by_example: dict[int, list] = {}
    for s in saved["samples"]:
        by_example.setdefault(s.example, []).append(s)
    for ex_i, rows in by_example.items():
        assert [s.position for s in rows] == list(range(len(rows)))
        prompt = prompt_ids(small.tokenizer, examples[ex_i].prompt)
        assert rows[0].signals.token_id == int(torch.argmax(small.next_logits(prompt)))
    assert saved["key"]["split"] == "train"
    with pytest.raises(SystemExit, match="labelled with other settings"):  # --split is part of the labels' key
        main([*args, "--label", "oracle", "--split", "validation", "--labels", str(labels_file),
              "--out", str(tmp_path / "v.pt")])
    with pytest.raises(SystemExit, match="drop --along"):
        main([*args, "--label", "oracle", "--along", str(out), "--out", str(tmp_path / "x.pt")])


def test_train_arbitrage_end_to_end(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "arb.pt"
    res = train(capsys, "arbitrage", "--slm", "small", "--llm", "large", "--suite", "units", "--out", str(out),
                "--zoo", str(zoo), "--limit", "2", "--epochs", "3", "--max-steps", "3",
                "--max-step-tokens", "8", "--quiet")
    assert out.stat().st_size < 2_000_000 and "baselines" in res and "tau" in res
    blob = torch.load(out, weights_only=False)
    assert blob["delimiter"] == "\n"
    strat = default_strategy_registry().build_from_artifact("arbitrage", str(out), draft="small", target="large", max_step_tokens=6)
    assert strat.delimiter == "\n" and (strat.tau == res["tau"] or math.isinf(strat.tau))
    models = {"small": HFModel("small", zoo / "small"), "large": HFModel("large", zoo / "large")}
    gen = generate(strat, models)
    assert len(gen.output) >= 1


def test_train_fusionroute_end_to_end(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fr.pt"
    res = train(capsys, "fusionroute", "--slm", "small", "--experts", "small,large", "--suite",
                "mixed", "--out", str(out), "--zoo", str(zoo), "--limit", "2", "--epochs", "1", "--quiet")
    assert out.stat().st_size < 2_000_000 and res["positions"] > 0
    # the gateway's way: roles router + one per expert (given out of order); the tuned router comes from the file
    strat = default_strategy_registry().build_from_artifact("fusionroute", str(out), router="router", b="large", a="small")
    assert strat.experts == ["small", "large"] and strat.router_model is not None
    tuned = strat.router_model.model.state_dict()
    untuned = HFModel("small", zoo / "small").model.state_dict()
    assert any(not torch.equal(tuned[k], untuned[k]) for k in tuned)  # the router's weights were trained
    models = {n: HFModel(n, zoo / n) for n in ("small", "large")}
    gen = generate(strat, {"router": models["small"], **models})
    assert set(gen.provenance) <= {"small", "large"} and len(gen.output) >= 1
    assert gen.usage["router"].completion_tokens == len(gen.output)  # the tuned router ran every position


def test_choose_step_tau_takes_fewest_escalations_reaching_the_reference() -> None:
    sweep = [{"tau": 0.1, "escalation": 0.9, "score": 0.9}, {"tau": 0.5, "escalation": 0.4, "score": 0.8},
             {"tau": 0.9, "escalation": 0.1, "score": 0.6}, {"tau": math.inf, "escalation": 0.0, "score": 0.5}]
    assert choose_step_tau(sweep, 0.8) == 0.5
    assert choose_step_tau(sweep, 0.5) == math.inf
    assert choose_step_tau(sweep, 0.95) == 0.1  # nothing reaches it: the best score
    assert choose_step_tau(sweep, 0.7, tolerance=0.1) == 0.9
