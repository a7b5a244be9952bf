"""``tandem eval collab``: step owners and route totals against hand-computed references, the targets, and one run
end to end through a real gateway subprocess on tiny random models (R2R trained with ``tandem train``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.collab_eval import (
    Operand,
    RouteStats,
    TargetError,
    check_target_names,
    format_domains,
    load_targets,
    main,
    model_params,
    parse_target,
    step_owners,
    target_checks,
)
from evals.collab_train import main as train_main


def test_step_owners_split_lines_and_collect_writers() -> None:
    pieces = [("12", "s", 2), ("+3", "l", 2), ("=15\n", "s", 4), ("\n", "s", 1), ("ans", "l", 3), ("wer: 15", "l", 7)]
    assert step_owners(pieces) == [{"s", "l"}, {"l"}]
    assert step_owners([]) == []
    assert step_owners([("a\nb", "x", 3)]) == [{"x"}, {"x"}]


def test_route_stats_summary_matches_a_hand_count() -> None:
    st = RouteStats()
    st.add(1.0, [("ab\n", "small", 3), ("c", "large", 1)], {"small": 4, "large": 2}, 2.0)
    st.add(0.0, [("d", "large", 1)], {"large": 1}, 1.0)
    s = st.summary("large", {"small": 10, "large": 100})
    assert s["n"] == 2 and s["accuracy"] == 0.5
    assert s["large_token_share"] == pytest.approx(2 / 5)
    assert s["large_step_share"] == pytest.approx(2 / 3)  # steps: "ab" (small), "c" (large), "d" (large)
    assert s["avg_activated_params"] == pytest.approx((10 * 4 + 100 * 3) / 5)
    assert s["tokens_per_s"] == pytest.approx(5 / 3.0)


def test_route_stats_per_domain_and_the_domain_table() -> None:
    st = RouteStats()
    st.add(1.0, [("a", "e1", 3), ("b", "e2", 1)], {}, 1.0, group="sql")
    st.add(0.0, [("c", "e2", 2)], {}, 1.0, group="units")
    st.add(0.0, [("d", "e1", 4)], {}, 1.0, group="sql")
    s = st.summary(None, {})
    assert s["n"] == 3 and s["tokens"] == 10
    assert s["by_suite"]["sql"]["n"] == 2 and s["by_suite"]["sql"]["accuracy"] == 0.5
    assert s["by_suite"]["sql"]["token_share"] == pytest.approx({"e1": 7 / 8, "e2": 1 / 8})
    assert s["by_suite"]["units"]["token_share"] == {"e2": 1.0}
    table = format_domains({"f": s}, "f")
    assert "| f | 0.500 | 0.000 |" in table and "| sql | 0.875 | 0.125 |" in table and "| units | 0.000 | 1.000 |" in table
    one = RouteStats()
    one.add(1.0, [("a", "e1", 1)], {}, 1.0, group="sql")
    assert format_domains({"f": one.summary(None, {})}, "f") == ""


def _row(acc: float, share: float | None = 0.0, tps: float = 1.0, steps: float = 0.0) -> dict:
    return {"accuracy": acc, "large_token_share": share, "tokens_per_s": tps, "large_step_share": steps}


def test_parse_target_forms() -> None:
    t = parse_target("collab.accuracy >= large.accuracy - 0.02")
    assert (t.left, t.op, t.right) == (Operand("collab", "accuracy"), ">=", Operand("large", "accuracy", 1.0, -0.02))
    assert parse_target("collab.large_token_share <= 25%").right == Operand(offset=0.25)
    assert parse_target("collab.tokens_per_s >= 1.8 * large.tokens_per_s").right == Operand("large", "tokens_per_s",
                                                                                            1.8)
    assert parse_target("r.tokens_per_s * 2 > 1").left == Operand("r", "tokens_per_s", 2.0)
    assert parse_target("arbitrage:0.05.accuracy > 0.5").left == Operand("arbitrage:0.05", "accuracy")
    for bad in ("collab.accuracy", "collab.accuracy >= ", "collab.accuracy >= large.accuracy >= 1",
                "collab.accuracy>=0.5", "collab.speed > 1", "2 * 3 > collab.accuracy", "collab.accuracy > x - y"):
        with pytest.raises(TargetError):
            parse_target(bad)


def test_target_checks_hold_and_fail() -> None:
    targets = [parse_target(t) for t in ("collab.accuracy >= large.accuracy - 0.02",
                                         "collab.large_token_share <= 0.25",
                                         "collab.tokens_per_s >= 1.8 * large.tokens_per_s")]
    roles = {"collab": "r2r", "small": "small", "large": "large"}
    ok = target_checks(targets, {"r2r": _row(0.79, 0.2, 20), "large": _row(0.8, 1, 10), "small": _row(0.3)}, roles)
    assert [h for _, h in ok] == [True, True, True]
    assert ok[0][0] == "collab.accuracy >= large.accuracy - 0.02 (0.79 vs 0.78)"
    bad = target_checks(targets, {"r2r": _row(0.7, 0.3, 15), "large": _row(0.8, 1, 10), "small": _row(0.3)}, roles)
    assert [h for _, h in bad] == [False, False, False]
    # a route named directly, a strict comparison, and a metric the run did not measure
    rows = {"fusionroute": _row(0.6, None), "expert-sql": _row(0.6)}
    res = target_checks([parse_target("collab.accuracy > expert-sql.accuracy"),
                         parse_target("collab.accuracy >= expert-sql.accuracy"),
                         parse_target("collab.large_token_share <= 0.5")], rows, {"collab": "fusionroute"})
    assert [h for _, h in res] == [False, True, False] and res[2][0].endswith("(not measured)")
    assert target_checks([], rows, {"collab": "fusionroute"}) == []


def test_target_names_and_files(tmp_path: Path) -> None:
    roles = {"collab": "r2r", "large": "large"}
    check_target_names([parse_target("collab.accuracy > small.accuracy")], ["r2r", "small", "large"], roles)
    with pytest.raises(TargetError, match="'rsd'"):
        check_target_names([parse_target("collab.accuracy > rsd.accuracy")], ["r2r", "small", "large"], roles)
    f = tmp_path / "targets.yaml"
    f.write_text("- collab.accuracy >= large.accuracy - 0.05\n- collab.large_token_share <= 30%\n")
    assert [t.text for t in load_targets(["collab.n >= 1"], [f])] == [
        "collab.n >= 1", "collab.accuracy >= large.accuracy - 0.05", "collab.large_token_share <= 30%"]
    f.write_text("{a: 1}\n")
    with pytest.raises(TargetError, match="list of target texts"):
        load_targets([], [f])


def test_model_params_reads_safetensors(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert model_params(tiny_model_dir) == sum(p.numel() for p in model.parameters())


def test_eval_collab_r2r_through_the_gateway(tmp_path: Path, zoo_tokenizer_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from evals.zoo.llama import make_llama

    zoo = tmp_path / "zoo"
    for i, name in enumerate(("small", "large")):
        make_llama(zoo / name, layers=1 + i, hidden=64, heads=2, seed=i, tokenizer_dir=zoo_tokenizer_dir)
    art = tmp_path / "r2r.pt"
    assert train_main(["r2r", "--slm", "small", "--llm", "large", "--suite", "units", "--out", str(art), "--zoo",
                       str(zoo), "--limit", "2", "--max-tokens", "8", "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--strategy", "r2r", "--suite", "units", "--n", "2", "--artifact", str(art), "--zoo", str(zoo),
                 "--max-tokens", "6", "--json", "--quiet", "--target", "collab.n >= 2",
                 "--target", "collab.large_token_share <= large.large_token_share", "--target", "small.n > 2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("| route |")
    res = json.loads(lines[-1])
    assert list(res["routes"]) == ["r2r", "small", "large"] and res["n"] == 2
    small, large, r2r = res["routes"]["small"], res["routes"]["large"], res["routes"]["r2r"]
    assert small["large_token_share"] == 0.0 and large["large_token_share"] == 1.0
    # per answer token; a stop token is decoded but has no text, so the averages can only be above the model's size
    p_small, p_large = res["params"]["small"], res["params"]["large"]
    assert p_small <= small["avg_activated_params"] <= 2 * p_small
    assert p_large <= large["avg_activated_params"] <= 2 * p_large
    # R2R runs the small model at every position and the large one where it routes
    assert r2r["avg_activated_params"] >= p_small + r2r["large_token_share"] * p_large - 1e-6
    assert all(r["tokens_per_s"] > 0 and r["tokens"] > 0 for r in res["routes"].values())
    assert [t["holds"] for t in res["targets"]] == [True, True, False]
    assert res["targets"][0]["statement"] == "collab.n >= 2 (2 vs 2)"
    assert "[MISS] small.n > 2 (2 vs 2)" in lines
    # the route's name and params reach the served config: τ = 0 hands every position to the large model
    assert main(["--strategy", "r2r", "--suite", "units", "--n", "1", "--artifact", str(art), "--zoo", str(zoo),
                 "--max-tokens", "6", "--json", "--quiet", "--route", "r2r-all", "--collab-param", "tau=0"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["roles"]["collab"] == "r2r-all" and res["routes"]["r2r-all"]["large_token_share"] == 1.0


def test_eval_collab_rejects_a_bad_target_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--strategy", "r2r", "--suite", "units", "--artifact", str(tmp_path / "none.pt"),
                 "--target", "collab.accuracy >> 1"]) == 2
    assert "needs exactly one of" in capsys.readouterr().err


def test_eval_collab_without_artifact_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--strategy", "r2r", "--suite", "units", "--artifact", str(tmp_path / "none.pt")]) == 2
    assert "no router file" in capsys.readouterr().err
