"""``tandem zoo build --steps 3`` then ``tandem zoo eval --json`` end to end on the real suites; build() with a
stand-in suite; the manifest's numbers come from the built folders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evals.zoo.build import build
from evals.zoo.cli import main
from evals.zoo.paths import PACKAGED_ZOO_DIR
from evals.zoo.spec import ZOO_SPECS, flops_per_token, param_count, spec_by_name
from tests.evals.zoo.test_train import TINY, get_standin


def test_cli_build_then_eval_end_to_end(tmp_path: Path, capsys):
    out = tmp_path / "zoo"
    rc = main(["build", "--out", str(out), "--steps", "3", "--only", "small,expert-units", "--train-n", "300",
               "--quiet"])
    assert rc == 0
    manifest = json.loads((out / "zoo.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["small", "expert-units"]
    for m in manifest["models"]:
        spec = spec_by_name(m["name"])
        assert m["steps"] == 3 and m["params"] == param_count(spec) and m["flops_per_token"] == flops_per_token(spec)
        assert (out / m["name"] / "config.json").exists() and list((out / m["name"]).glob("*.safetensors"))
        assert (out / m["name"] / "tokenizer.json").exists()
    capsys.readouterr()
    assert main(["eval", "--zoo", str(out), "--n", "3", "--max-new", "24", "--json", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result["models"]) == {"small", "expert-units"}
    for per_suite in result["models"].values():
        assert set(per_suite) == {"arithmetic", "sql", "units"}
        assert all(0.0 <= v <= 1.0 for v in per_suite.values())
    assert any(line.startswith("| small |") for line in lines)


def test_build_with_a_standin_suite_keeps_other_manifest_entries(tmp_path: Path):
    first = build(tmp_path, specs=[TINY], get_suite=get_standin, progress=False, log=None, steps=2)
    assert first["models"][0]["steps"] == 2 and first["models"][0]["train_tokens"] > 0
    other = replace(TINY, name="tiny2", seed=4)
    second = build(tmp_path, specs=[TINY, other], only=["tiny2"], get_suite=get_standin, progress=False, log=None,
                   steps=2)
    assert [m["name"] for m in second["models"]] == ["tiny", "tiny2"]
    assert second["total_bytes"] == sum(m["bytes"] for m in second["models"])


def test_parallel_build_gives_the_same_weights_as_one_at_a_time(tmp_path: Path):
    from safetensors.torch import load_file

    specs = [TINY, replace(TINY, name="tiny2", seed=4, hidden=96, heads=3)]
    one = build(tmp_path / "one", specs=specs, get_suite=get_standin, progress=False, log=None, steps=4, jobs=1)
    two = build(tmp_path / "two", specs=specs, get_suite=get_standin, progress=False, log=None, steps=4, jobs=2)
    assert [m["name"] for m in one["models"]] == [m["name"] for m in two["models"]] == ["tiny", "tiny2"]
    assert "2 model(s) at once" in two["built_on"]
    for spec in specs:
        a = load_file(str(next((tmp_path / "one" / spec.name).glob("*.safetensors"))))
        b = load_file(str(next((tmp_path / "two" / spec.name).glob("*.safetensors"))))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_unknown_model_is_refused(tmp_path: Path, capsys):
    assert main(["build", "--out", str(tmp_path), "--only", "nope", "--steps", "1", "--quiet"]) == 2
    assert "nope" in capsys.readouterr().err


def test_packaged_zoo_matches_the_specs():
    manifest_path = PACKAGED_ZOO_DIR / "zoo.json"
    if not manifest_path.exists():
        pytest.skip("no committed zoo yet (run `tandem zoo build`)")
    manifest = json.loads(manifest_path.read_text())
    assert {m["name"] for m in manifest["models"]} == {s.name for s in ZOO_SPECS}
    total = 0
    for m in manifest["models"]:
        spec = spec_by_name(m["name"])
        want = spec.to_json()
        assert m["spec"] == want and m["steps"] == spec.steps
        folder = PACKAGED_ZOO_DIR / m["name"]
        total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        cfg = json.loads((folder / "config.json").read_text())
        assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]) == (
            spec.layers, spec.hidden, spec.heads)
    assert total <= 40_000_000
    assert flops_per_token(spec_by_name("large")) >= 5 * flops_per_token(spec_by_name("small"))
