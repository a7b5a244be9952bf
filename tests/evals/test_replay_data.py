"""Tests for evals/replay_data.py: the real files in ../shared/data, and ScoreMatrix's methods on small matrices.

Expected values are recomputed from the raw CSVs here with the csv module, independently of the loaders.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from evals.replay_data import (
    ScoreMatrix,
    estimate_tokens,
    last_turn,
    litellm_prices,
    load_any,
    load_jsonl,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routerbench,
    strip_shared_prefix,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")
csv.field_size_limit(sys.maxsize)


def raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- RouterBench


@needs_data
def test_arc_loads_with_missing_scores_as_nan() -> None:
    path = DATA / "routerbench" / "arc_challenge_train.csv"
    rows = raw_rows(path)
    sm = load_routerbench(path)
    assert 1000 <= sm.n <= 1100 and sm.m == 11
    assert len(set(sm.ids)) == sm.n  # duplicates merged
    assert not np.isnan(sm.costs).any()
    assert set(sm.categories) == {"arc-challenge"}
    # every empty score cell is NaN after loading when no duplicate row fills it in
    by_id: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_id.setdefault(r["sample_id"], []).append(r)
    n_missing = 0
    for i, sid in enumerate(sm.ids):
        for j, model in enumerate(sm.models):
            cells = [r[model] for r in by_id[sid] if r[model] != ""]
            if cells:
                assert sm.scores[i, j] == float(cells[0])
            else:
                assert math.isnan(sm.scores[i, j])
                n_missing += 1
    assert n_missing > 0
    # without merging: one row per CSV row, and every empty cell is NaN (never 0)
    raw = load_routerbench(path, merge_duplicates=False)
    assert raw.n == len(rows)
    empty = sum(r[m] == "" for r in rows for m in raw.models)
    assert int(np.isnan(raw.scores).sum()) == empty > n_missing


@needs_data
def test_few_shot_block_is_stripped_for_arc_and_winogrande() -> None:
    for name in ("arc_challenge_train.csv", "winograde_train.csv"):
        path = DATA / "routerbench" / name
        rows = raw_rows(path)
        sm = load_routerbench(path, merge_duplicates=False)
        full = [ast.literal_eval(r["prompt"])[-1] for r in rows]
        # the raw last turns all start the same; the routed prompts do not
        assert len({t[:200] for t in full}) == 1
        assert len({p[:60] for p in sm.prompts}) > 0.5 * len(set(sm.prompts))  # Winogrande twins share a start
        for p, t in zip(sm.prompts, full, strict=True):
            assert t.endswith(p) and len(t) - len(p) >= 1000  # ARC's block is ~1,650 chars, Winogrande's ~1,200
            assert "\n\n" not in p.strip()  # only the question block is left
            assert p.rstrip().endswith("Answer:")


@needs_data
def test_mbpp_and_winogrande_counts_and_scores_match_raw() -> None:
    for name, expected in (("mbpp_train.csv", 300), ("winograde_train.csv", 880)):
        path = DATA / "routerbench" / name
        rows = raw_rows(path)
        sm = load_routerbench(path)
        assert abs(sm.n - expected) / expected < 0.05
        assert not np.isnan(sm.scores).any() and not np.isnan(sm.costs).any()
        rng = np.random.default_rng(0)
        for i in rng.integers(0, sm.n, 20):
            for j, model in enumerate(sm.models):
                assert sm.scores[i, j] == float(rows[i][model])
                assert sm.costs[i, j] == float(rows[i][f"{model}|total_cost"])
    mbpp = load_routerbench(DATA / "routerbench" / "mbpp_train.csv")
    assert mbpp.prompts[0] == ast.literal_eval(raw_rows(DATA / "routerbench" / "mbpp_train.csv")[0]["prompt"])[-1]


@needs_data
def test_load_any_directory_concatenates_routerbench() -> None:
    sm = load_any(DATA / "routerbench")
    parts = [load_routerbench(p) for p in sorted((DATA / "routerbench").glob("*.csv"))]
    assert sm.n == sum(p.n for p in parts)
    assert set(sm.categories) == {"arc-challenge", "mbpp", "winogrande"}
    assert sm.models == parts[0].models
    assert isinstance(load_any(DATA / "routerbench" / "mbpp_train.csv"), ScoreMatrix)


# ---------------------------------------------------------------- RouteLLM


@needs_data
def test_routellm_gsm8k_scores_and_estimated_costs() -> None:
    path = DATA / "routellm" / "gsm8k_responses.csv"
    rows = raw_rows(path)
    sm = load_any(path)
    assert sm.n == len(rows) == 1319
    assert sorted(sm.models) == ["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert not np.isnan(sm.scores).any() and not np.isnan(sm.costs).any()
    g = sm.model_index("gpt-4-1106-preview")
    x = sm.model_index("mistralai/Mixtral-8x7B-Instruct-v0.1")
    acc_g = sum(r["gpt-4-1106-preview"] == "True" for r in rows) / len(rows)
    assert sm.scores[:, g].mean() == pytest.approx(acc_g)
    prices = litellm_prices()
    assert prices["gpt-4-1106-preview"][0] > 10 * prices["mistralai/Mixtral-8x7B-Instruct-v0.1"][0] > 0
    r0 = rows[0]
    expect = (
        estimate_tokens(r0["prompt"]) * prices["gpt-4-1106-preview"][0]
        + estimate_tokens(r0["gpt-4-1106-preview_response"]) * prices["gpt-4-1106-preview"][1]
    )
    assert sm.costs[0, g] == pytest.approx(expect)
    assert (sm.costs[:, g] > sm.costs[:, x]).all()
    # a different price table changes the costs, not the scores
    cheap = load_routellm_gsm8k(path, prices={m: (1e-9, 1e-9) for m in sm.models})
    assert np.array_equal(cheap.scores, sm.scores) and cheap.costs.max() < sm.costs.min()


@needs_data
def test_routellm_mmlu_subjects() -> None:
    d = DATA / "routellm" / "mmlu"
    sm = load_routellm_mmlu(d)
    files = sorted(d.glob("mmlu_*.csv"))
    assert len(files) == 57 and len(set(sm.categories)) == 57
    rows = [r for f in files for r in raw_rows(f)]
    assert sm.n == len(rows) and abs(sm.n - 14042) < 100
    assert not np.isnan(sm.scores).any()
    j = sm.model_index("gpt-4-1106-preview")
    assert sm.scores[:, j].mean() == pytest.approx(np.mean([r["gpt-4-1106-preview"] == "True" for r in rows]))
    assert sm.prompts == [r["prompt"] for r in rows]
    assert len(set(sm.ids)) == sm.n


# ---------------------------------------------------------------- JSONL and the matrix


def test_load_jsonl_roundtrip(tmp_path: Path) -> None:
    lines = [
        {
            "id": "a",
            "prompt": "2+2?",
            "category": "math",
            "models": {"s": {"score": 1, "cost": 0.1}, "l": {"score": 1, "cost": 1.0}},
        },
        {
            "prompt": [{"role": "user", "content": "hi"}, {"role": "user", "content": "capital of France?"}],
            "models": {"l": {"score": 0.5, "cost": 2.0}, "s": {"score": None, "cost": 0.2}},
        },
        {"id": "c", "prompt": "x", "models": {"l": {"score": 0, "cost": None}, "z": {"score": 1, "cost": 3.0}}},
    ]
    p = tmp_path / "replay.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    sm = load_any(p)
    assert sm.models == ["s", "l", "z"]
    assert sm.ids == ["a", "replay.1", "c"]
    assert sm.prompts[1] == "capital of France?"
    assert sm.categories == ["math", "", ""]
    np.testing.assert_array_equal(sm.scores, [[1, 1, np.nan], [np.nan, 0.5, np.nan], [np.nan, 0, 1]])
    np.testing.assert_array_equal(sm.costs, [[0.1, 1.0, np.nan], [0.2, 2.0, np.nan], [np.nan, np.nan, 3.0]])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "no models"}) + "\n")
    with pytest.raises(ValueError):
        load_jsonl(bad)


def small() -> ScoreMatrix:
    return ScoreMatrix(
        prompts=["p0", "p1", "p2"],
        models=["a", "b"],
        scores=np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]),
        costs=np.array([[1.0, 10.0], [1.0, 10.0], [2.0, 20.0]]),
        categories=["x", "y", "x"],
        ids=["0", "1", "2"],
        source="t",
    )


def test_score_matrix_methods() -> None:
    sm = small()
    sub = sm.subset([2, 0])
    assert sub.ids == ["2", "0"] and sub.scores[0, 1] == 1.0
    assert sm.subset(np.array([True, False, True])).ids == ["0", "2"]
    assert sm.subset(slice(1, None)).prompts == ["p1", "p2"]
    b = sm.select_models(["b"])
    assert b.models == ["b"] and b.costs[:, 0].tolist() == [10.0, 10.0, 20.0]
    with pytest.raises(KeyError):
        sm.select_models(["nope"])
    assert sm.dropna().ids == ["0", "2"]
    assert sm.dropna(how="all").n == 3
    other = ScoreMatrix(["q"], ["b", "c"], np.array([[1.0, 0.0]]), np.array([[5.0, 6.0]]), ["z"], ["9"], "u")
    cat = ScoreMatrix.concat([sm, other])
    assert cat.models == ["a", "b", "c"] and cat.n == 4 and cat.source == "t+u"
    assert math.isnan(cat.scores[3, 0]) and cat.scores[3, 1] == 1.0 and math.isnan(cat.scores[0, 2])
    pts = sm.model_points()
    # model a: scored rows 0 and 2 → cost (1+2)/2, accuracy 0.5
    assert pts[0] == pytest.approx((1.5, 0.5)) and pts[1] == pytest.approx((40 / 3, 2 / 3))
    with pytest.raises(ValueError):
        ScoreMatrix(["p"], ["a"], np.array([[2.0]]), np.array([[1.0]]), ["x"], ["0"])


def test_prompt_helpers() -> None:
    assert last_turn("['first', 'second turn']") == "second turn"
    assert last_turn("plain text [not a list") == "plain text [not a list"
    shot = "Q: 1+1?\nAnswer:\n2\n\nQ: 2+2?\nAnswer:\n4\n\n" * 10
    texts = [shot + "Q: 3+3?\nAnswer:", shot + "Q: 5+5?\nAnswer:"]
    assert strip_shared_prefix(texts) == ["Q: 3+3?\nAnswer:", "Q: 5+5?\nAnswer:"]
    # short shared prefixes stay
    assert strip_shared_prefix(["Write a\n\nfoo", "Write a\n\nbar"]) == ["Write a\n\nfoo", "Write a\n\nbar"]
    assert estimate_tokens("abcdefgh") == 2 and estimate_tokens("") == 1


def test_readme_jsonl_example_loads(tmp_path) -> None:
    """The README's three-line example of the replay JSONL format is what `load_jsonl` reads."""
    import re

    from evals.replay_data import load_jsonl

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```json\n(.*?)```", readme, re.S)
    assert block, "no ```json block in the README"
    path = tmp_path / "example.jsonl"
    path.write_text(block.group(1))
    sm = load_jsonl(path)
    assert sm.n == 3 and sm.models == ["small", "large"]
    assert sm.scores[0].tolist() == [0.0, 1.0] and sm.categories[0] == "math"
