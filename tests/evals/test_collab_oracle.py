"""``evals.collab_oracle``: the Arbitrage oracle along ``collab.labels.better_step_trajectory`` (the trajectory
``arbitrage_labels`` labels), and ``tandem eval oracle``'s JSON, on the committed char-level zoo pair."""

from __future__ import annotations

import asyncio
import json

import pytest

from collab.labels import arbitrage_labels
from evals import collab_tasks as tasks
from evals.collab_oracle import arbitrage_oracle, main
from evals.zoo.tokenizer import END_ID, decode, encode


def test_arbitrage_oracle_follows_the_better_step_trajectory(committed_zoo_pair) -> None:
    slm, llm = committed_zoo_pair
    examples = tasks.task_examples("units", "test", 4)
    prompts = [encode(ex.prompt) for ex in examples]
    how = {"decode": decode, "delimiter": tasks.step_delimiter("units"), "stop_ids": [END_ID], "max_steps": 4,
           "max_step_tokens": 24}
    got = asyncio.run(arbitrage_oracle(examples, prompts, slm, llm, step_score=tasks.check_step,
                                       outcome=tasks.check, **how))
    rows = asyncio.run(arbitrage_labels(examples, prompts, slm, llm, step_score=tasks.check_step, **how))
    assert got["steps"] == len(rows) > 0
    assert got["large_step_share"] == sum(r.target_score > r.draft_score for r in rows) / len(rows)
    assert got["draft_steps_accepted"] == sum(r.draft_score >= 0.5 for r in rows) / len(rows)
    assert 0.0 <= got["accuracy"] <= 1.0


def test_command_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--suite", "sql", "--n", "3", "--max-tokens", "30", "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (res["strategy"], res["small"], res["large"], res["n"]) == ("r2r", "small", "large", 3)
    assert 0.0 <= res["large_token_share"] <= 1.0 and res["accuracy"] >= res["large_accuracy"]


def test_unknown_strategy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--strategy", "fusionroute"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_command_ranks_the_hand_overs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--suite", "sql", "--n", "12", "--max-tokens", "40", "--separability", "--folds", "2", "--json",
                 "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sep = res["separability"]
    assert sep["positions"] >= res["tokens"] and sep["hand_over_share"] > 0
    assert {"router", "router_refit", "router_refit_hidden", "small_confidence", "large_margin"} == set(sep["scores"])


def test_separability_is_for_r2r_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--strategy", "arbitrage", "--separability"])
    assert e.value.code == 2 and "--strategy r2r" in capsys.readouterr().err
