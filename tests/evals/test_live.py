"""Live runner against a real gateway subprocess serving a tiny in-process Llama: results file, resume after an
interruption, the eval-run id in the request log, and the run rebuilt from the log matching the results file."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from evals import datasets
from evals.live import merge_provenance, run_live
from evals.run_store import load_run, load_run_from_log, read_results, to_replay_jsonl

pytestmark = pytest.mark.timeout(300)

ROUTES = ["tiny", "tiny-pricey"]


@pytest.fixture(scope="module")
def items():
    return datasets.get_dataset("arithmetic").items("test", 3)


@pytest.fixture
def gateway(gateway_factory, tiny_model_dir):
    backend = {"kind": "local", "path": str(tiny_model_dir), "device": "cpu", "threads": 1}
    return gateway_factory({"backends": [
        {**backend, "name": "tiny", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {**backend, "name": "tiny-pricey", "price": {"input_per_mtok": 30.0, "output_per_mtok": 60.0}},
    ]})


def test_merge_provenance():
    assert merge_provenance([(None, "a"), (None, "b")]) is None
    assert merge_provenance([("s", "a"), ("s", "b"), ("l", "c"), (None, "d"), ("s", "e")]) == [
        ["s", "ab"], ["l", "cd"], ["s", "e"]]


def test_live_run_resume_and_log(gateway, items, tmp_path):
    run_id = "test-run-1"

    async def interrupted() -> None:
        task = asyncio.create_task(run_live(gateway.url, ROUTES, items, run_id, tmp_path, concurrency=1,
                                            max_tokens=12, progress=False))
        path = tmp_path / run_id / "results.jsonl"
        while not (path.exists() and path.read_text().count("\n") >= 2):
            await asyncio.sleep(0.01)
            assert not task.done(), "run finished before it could be interrupted"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    first = read_results(tmp_path / run_id)
    assert 2 <= len(first) < len(ROUTES) * len(items)

    summary = asyncio.run(run_live(gateway.url, ROUTES, items, run_id, tmp_path, concurrency=2, max_tokens=12,
                                   progress=False))
    assert summary.skipped == len(first) and summary.failed == 0
    assert summary.finished == len(ROUTES) * len(items) - len(first)
    rows = read_results(tmp_path / run_id)
    keys = [(r["route"], r["item_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(ROUTES) * len(items)  # resume repeated nothing
    by_id = {it.id: it for it in items}
    for r in rows:
        assert r["error"] is None and r["request_id"]
        assert r["score"] == datasets.check(by_id[r["item_id"]], r["output"])
        assert r["cost_usd"] > 0 and r["latency_s"] > 0
        assert r["decision"]["backend"] == r["route"]
        assert sum(t["completion"] for t in r["tokens"].values()) >= 1
    cost = {rt: np.mean([r["cost_usd"] for r in rows if r["route"] == rt]) for rt in ROUTES}
    assert cost["tiny-pricey"] > 10 * cost["tiny"]  # prices differ 30x; same model, same greedy outputs

    # a third start has nothing left to do and sends nothing
    again = asyncio.run(run_live(gateway.url, ROUTES, items, run_id, tmp_path, concurrency=2, max_tokens=12,
                                 progress=False))
    assert again.skipped == len(rows) and again.finished == 0

    meta = json.loads((tmp_path / run_id / "meta.json").read_text())
    assert meta["routes"] == ROUTES and meta["gateway"] == gateway.url and len(meta["resumed_at"]) == 2

    # the gateway logged every request under the run id; the run rebuilt from the log matches the results file
    run = load_run(tmp_path / run_id)
    logged = load_run_from_log(gateway.db_url, run_id)
    assert sorted(logged.routes) == sorted(run.routes) and sorted(logged.items) == sorted(run.items)
    order = [logged.items.index(it) for it in run.items]
    for rt in ROUTES:
        np.testing.assert_allclose(logged.costs[rt][order], run.costs[rt], rtol=1e-9)
        np.testing.assert_array_equal(logged.scores[rt][order], run.scores[rt])
    assert {r["request_id"] for r in logged.rows} == {r["request_id"] for r in rows}

    n = to_replay_jsonl(run, tmp_path / "replay.jsonl")
    from evals.replay_data import load_jsonl

    sm = load_jsonl(tmp_path / "replay.jsonl")
    assert n == len(items) and sm.scores.shape == (len(items), len(ROUTES))


    # a route the gateway does not know: the error is recorded, and retried on the next start
    summary = asyncio.run(run_live(gateway.url, ["no-such-route"], items[:1], "err-run", tmp_path, progress=False))
    assert summary.failed == 1
    bad = read_results(tmp_path / "err-run")
    assert bad[0]["error"] and bad[0]["score"] is None
    again = asyncio.run(run_live(gateway.url, ["no-such-route"], items[:1], "err-run", tmp_path, progress=False))
    assert again.skipped == 0 and again.failed == 1  # failures are not "done"

    # the command line: tandem eval live ... then tandem report RUN --out DIR
    from evals.cli import main

    assert main(["eval", "live", "--gateway", gateway.url, "--routes", "tiny", "--suite", "arithmetic", "--n", "2",
                 "--run-id", "cli-run", "--out", str(tmp_path), "--max-tokens", "8"]) == 0
    assert len(read_results(tmp_path / "cli-run")) == 2
    assert main(["report", str(tmp_path / "cli-run"), "--out", str(tmp_path / "rep")]) == 0
    assert main(["report", "cli-run", "--from-log", gateway.db_url, "--out", str(tmp_path / "rep-log")]) == 0
    assert "tiny" in (tmp_path / "rep-log" / "summary.md").read_text()


def test_default_run_id_of_several_suites_is_valid():
    from evals.cli import RUN_ID, _run_id

    rid = _run_id(None, "demo-sql,units")
    assert RUN_ID.match(rid) and rid.startswith("demo-sql.units-")
    with pytest.raises(SystemExit):
        _run_id("bad id", "sql")
