"""`tandem train` from a real SQLite request log, replay JSONL and an eval run folder (evals/router_training.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from evals.router_training import (
    chosen_outcome,
    expensive_share,
    main,
    out_of_fold_curve,
    parse_since,
    prompt_text,
    split_table,
)
from routers.base import Record, Router, TrainingTable, queries_from_table, records_to_table
from routers.baselines import KnnRouter

MATH = [f"What is {a} plus {b} times {a + b}? Compute the total." for a in range(3, 15) for b in (2, 7, 9)]
CODE = [f"Write a python function that returns the {w} of a list of {t}." for w in
        ("sum", "maximum", "minimum", "median", "mode", "length", "reverse", "product", "mean", "range", "variance",
         "count") for t in ("integers", "floats", "strings")]


def outcome(prompt: str, model: str) -> float:
    """cheap solves code, dear solves everything: a learnable rule."""
    return 1.0 if model == "dear" or prompt in CODE else 0.0


COST = {"cheap": 0.001, "dear": 0.02}


def fill_log(url: str, since_cut: float) -> int:
    """Requests + feedback through gateway.storage; half the math prompts are logged before `since_cut`."""
    from sqlalchemy import insert

    from gateway.storage.db import make_engine, migrate
    from gateway.storage.request_log import LogRow, write_rows
    from gateway.storage.tables import feedback

    migrate(url)
    engine = make_engine(url)
    rows, fb = [], []
    n = 0
    for i, p in enumerate(MATH + CODE):
        for model in ("cheap", "dear"):
            rid = f"r{i}-{model}"
            created = since_cut - 100 if (p in MATH and i % 2 == 0) else since_cut + i
            rows.append(LogRow(id=rid, route="auto", model_chosen=model, created_at=created, cost_usd=COST[model],
                               prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": p}])
                        .to_params())
            fb.append({"request_id": rid, "score": outcome(p, model), "label": None, "created_at": created + 1})
            n += 1
    # a failed request and a request without feedback must be ignored
    rows.append(LogRow(id="err", route="auto", model_chosen="dear", status="error", prompt="x").to_params())
    rows.append(LogRow(id="nofb", route="auto", model_chosen="dear", prompt="y").to_params())
    write_rows(engine, rows)
    with engine.begin() as conn:
        conn.execute(insert(feedback), fb)
        conn.execute(insert(feedback), [{"request_id": "err", "score": 1.0, "created_at": time.time()}])
    engine.dispose()
    return n


@pytest.fixture(scope="module")
def log_url(tmp_path_factory) -> tuple[str, float, int]:
    path = tmp_path_factory.mktemp("db") / "log.sqlite"
    cut = 1_700_000_000.0
    url = f"sqlite:///{path}"
    return url, cut, fill_log(url, cut)


def test_train_from_db_saves_a_working_router(log_url, tmp_path, capsys) -> None:
    url, _, n = log_url
    out = tmp_path / "router.pkl"
    assert main(["logreg", "--from-db", url, "--out", str(out), "--willingness-to-pay", "10"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n_records"] == n  # the error row and the row without feedback are left out
    r = Router.load(out)
    meta = json.loads((tmp_path / "router.pkl.json").read_text())
    assert meta["n_records"] == n and meta["data_window"]["source"] == "db"
    assert meta["calibration"]["knob"] == 10.0
    held = meta["heldout"]
    assert held["n_prompts"] > 0 and held["coverage"] == 1.0
    # at λ = 10 $⁻¹, dear costs 0.19 score units more: code goes cheap, math goes dear
    assert r.decide(CODE[0]).route == "cheap" and r.decide(MATH[1]).route == "dear"
    assert held["accuracy"] >= 0.9 and held["expensive_share"] < 0.8


def test_since_and_route_filters(log_url, tmp_path, capsys) -> None:
    url, cut, n = log_url
    assert main(["knn", "--from-db", url, "--since", str(cut), "--out", str(tmp_path / "a.pkl")]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_records"]
    assert got == n - 2 * sum(1 for i, p in enumerate(MATH + CODE) if p in MATH and i % 2 == 0)
    assert main(["knn", "--from-db", url, "--route", "nope", "--out", str(tmp_path / "b.pkl")]) == 1


def test_expensive_share_target(log_url, tmp_path, capsys) -> None:
    url, _, _ = log_url
    assert main(["logreg", "--from-db", url, "--expensive-share", "0.0", "--out", str(tmp_path / "c.pkl")]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["calibration"]["train_expensive_share"] == 0.0
    assert rep["heldout"]["expensive_share"] <= 0.1


def test_from_replay_jsonl_and_tier_router(tmp_path, capsys) -> None:
    path = tmp_path / "scores.jsonl"
    with open(path, "w") as f:
        for i, p in enumerate(MATH + CODE):
            cat = "math" if p in MATH else "code"
            f.write(json.dumps({"id": str(i), "prompt": p, "category": cat,
                                "models": {m: {"score": outcome(p, m), "cost": c} for m, c in COST.items()}}) + "\n")
    out = tmp_path / "e.pkl"
    assert main(["ellie-cascade", "--from-replay", str(path), "--out", str(out), "--expensive-share", "0.6"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["calibration"]["train_expensive_share"] <= 0.6
    assert rep["heldout"]["accuracy"] >= 0.8
    assert Router.load(out).decide(CODE[3], ["cheap", "dear"]).route in ("cheap", "dear")


def test_from_eval_run_folder(tmp_path, capsys) -> None:
    from evals.run_store import append_result

    run = tmp_path / "run1"
    run.mkdir()
    for i, p in enumerate(MATH + CODE):
        for m, c in COST.items():
            append_result(run, {"run_id": "run1", "route": m, "item_id": f"item{i}", "prompt": p,
                                "category": "x", "score": outcome(p, m), "cost_usd": c, "error": None,
                                "finished_at": 1000.0 + i})
    append_result(run, {"run_id": "run1", "route": "dear", "item_id": "bad", "score": None, "error": "boom"})
    assert main(["logreg", "--from-eval", str(run), "--out", str(tmp_path / "f.pkl")]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["n_records"] == 2 * len(MATH + CODE)


def test_helpers() -> None:
    assert parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20") == 1_700_000_000.0
    assert prompt_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == "a"
    assert prompt_text(json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})) == "hi"
    assert expensive_share(np.array([1, 1, 0]), np.array([0.1, 0.5])) == pytest.approx(2 / 3)
    t = TrainingTable([str(i) for i in range(20)], ["a"], np.zeros((20, 1)), np.zeros((20, 1)), [None] * 20)
    tr, te = split_table(t, 0.25, 0)
    assert len(te.prompts) == 5 and sorted(tr.prompts + te.prompts) == sorted(t.prompts)


def test_default_rule_is_accuracy_share_from_an_out_of_fold_curve(log_url, tmp_path, capsys) -> None:
    url, _, _ = log_url
    out = tmp_path / "g.pkl"
    assert main(["logreg", "--from-db", url, "--out", str(out), "--calibration-folds", "3"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out.strip().splitlines()[-1])
    cal = rep["calibration"]
    assert cal["target"] == {"accuracy_share": 0.95} and cal["folds"] == 3
    # dear solves everything, cheap only code: 95 % of dear's accuracy needs dear on (nearly) every math prompt and
    # nothing more, so the expected point is far cheaper than always-dear and still reaches the target
    assert cal["best_candidate"]["model"] == "dear" and cal["best_candidate"]["accuracy"] == 1.0
    exp = cal["expected"]
    assert exp["accuracy"] >= 0.95 and exp["cost_share_of_dearest"] < 0.8
    r = Router.load(out)
    assert r.knob == cal["knob"]  # the gateway deploys the artifact's knob
    meta = json.loads((tmp_path / "g.pkl.json").read_text())
    assert meta["calibration"]["expected"] == exp and meta["heldout"]["accuracy"] >= 0.8
    assert "by accuracy share 0.95" in captured.err and "expected (out-of-fold" in captured.err


def test_out_of_fold_curve_decides_each_row_with_a_router_not_fitted_on_it() -> None:
    # labels alternate with the index, so nothing generalises: a 1-NN router fitted on every row is right on every
    # row (it finds the row itself), while out of fold it can only be right by chance
    prompts = [f"item number {i} in the catalogue of things" for i in range(40)]
    records = [Record(prompt=p, candidate=m, score=float((i + j) % 2), cost=0.001 * (j + 1))
               for i, p in enumerate(prompts) for j, m in enumerate(("a", "b"))]
    table = records_to_table(records)
    in_sample = KnnRouter(k=1)
    in_sample.fit(table)
    s_in, _ = chosen_outcome(in_sample, table, in_sample.choose(in_sample.prepare(queries_from_table(table)), 0.0))
    costs, accs = out_of_fold_curve(lambda: KnnRouter(k=1), table, [0.0], folds=4, seed=0, progress=False)
    assert float(np.mean(s_in)) == 1.0
    assert accs[0] < 0.8 and 0.001 <= costs[0] <= 0.002
