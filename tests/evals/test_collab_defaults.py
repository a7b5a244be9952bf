"""Defaults of ``tandem train`` / ``tandem eval collab``: R2R and Arbitrage default to the real pair on the English
suites; a zoo suite keeps the char-level zoo; model names resolve to the folders every consumer loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals import collab_defaults as d
from evals.collab_eval import main as eval_main
from evals.collab_train import model_dir


def test_default_suites_pairs_and_artifacts() -> None:
    assert d.DEFAULT_SUITE == {"r2r": "english", "arbitrage": "english-steps", "fusionroute": "mixed"}
    assert d.default_pair("english") == d.default_pair("english-steps") == ("smollm2-draft", "smollm2")
    assert d.default_pair("sql") == d.default_pair("english,sql") == d.default_pair("mixed") == ("small", "large")
    assert d.default_artifact("r2r", "english") == d.ARTIFACTS / "r2r-english.pt"
    assert d.default_artifact("arbitrage", "english-steps") == d.ARTIFACTS / "arbitrage-english.pt"
    assert d.default_artifact("r2r", "sql") == d.ARTIFACTS / "r2r-sql.pt"
    assert d.default_artifact("arbitrage", "units") == d.ARTIFACTS / "arbitrage-units.pt"
    assert d.default_artifact("fusionroute", "mixed") == d.ARTIFACTS / "fusionroute-mixed.pt"


def test_suite_budget_uses_the_real_pairs_budget_on_english() -> None:
    from evals.zoo.real_pair_eval import MAX_NEW

    assert d.suite_budget("english") == MAX_NEW["english"]
    assert d.suite_budget("english-steps") == MAX_NEW["english-steps"]
    assert d.suite_budget("english,english-steps") == max(MAX_NEW.values())
    assert d.suite_budget("sql") > MAX_NEW["english"]  # the zoo's: the longest char-level answer plus slack


def test_model_folder_names(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert d.model_folder(str(tiny_model_dir)) == tiny_model_dir  # a folder is itself
    assert d.model_folder("small", tmp_path) == tmp_path / "small"  # a zoo name, checked by the caller
    with pytest.raises(FileNotFoundError, match="no draft layers at"):
        d.model_folder("smollm2-draft", layers=tmp_path / "none.safetensors")
    with pytest.raises(SystemExit, match="no draft layers at"):
        model_dir("smollm2-draft", layers=tmp_path / "none.safetensors")


@pytest.mark.parametrize(("strategy", "artifact"), [("r2r", "r2r-english.pt"), ("arbitrage", "arbitrage-english.pt")])
def test_eval_collab_defaults_to_the_real_pair(strategy: str, artifact: str, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """Without --suite the command runs the real pair on its English suite with its router file (the run itself
    is replaced by a recorder: what is checked is what the command hands it)."""
    import evals.collab_eval as ce

    seen: dict = {}

    def record(strategy: str, suite: str, **kw):
        seen.update(strategy=strategy, suite=suite, **kw)
        raise FileNotFoundError("recorded")

    monkeypatch.setattr(ce, "run_eval", record)
    monkeypatch.setattr(ce, "default_artifact", lambda s, suite: tmp_path / d.default_artifact(s, suite).name)
    (tmp_path / artifact).write_bytes(b"")
    assert eval_main(["--strategy", strategy, "--quiet"]) == 2
    assert seen["suite"] == d.DEFAULT_SUITE[strategy] and (seen["slm"], seen["llm"]) == ("smollm2-draft", "smollm2")
    assert Path(seen["artifact"]).name == artifact
    seen.clear()
    (tmp_path / f"{strategy}-sql.pt").write_bytes(b"")
    assert eval_main(["--strategy", strategy, "--suite", "sql", "--quiet"]) == 2
    assert (seen["suite"], seen["slm"], seen["llm"]) == ("sql", "small", "large")
    assert Path(seen["artifact"]).name == f"{strategy}-sql.pt"
