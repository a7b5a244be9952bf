"""Router files: the committed ``collab/artifacts/*.pt`` (written before the format version) still build their
strategies from what they hold; a file that is not a router file, of another kind or of a newer format is refused
with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from collab.arbitrage import StepRouter
from collab.artifact import FORMAT, read_artifact
from collab.fusionroute import load_fusionroute
from collab.inproc import HFModel
from collab.r2r import R2RRouter
from collab.registry import default_strategy_registry

ARTIFACTS = Path(__file__).resolve().parents[2] / "collab" / "artifacts"


def committed(name: str) -> Path:
    path = ARTIFACTS / name
    if not path.exists():
        pytest.skip(f"no {path}")
    return path


def assert_same_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def test_committed_r2r_and_arbitrage_files_build_as_saved() -> None:
    registry = default_strategy_registry()
    for name, strategy, roles in (("r2r-sql.pt", "r2r", {"slm": "small", "llm": "large"}),
                                  ("arbitrage-units.pt", "arbitrage", {"draft": "small", "target": "large"})):
        path = committed(name)
        blob = torch.load(path, weights_only=False)
        assert "format" not in blob  # written before the format version: read as format 1
        s = registry.build_from_artifact(strategy, str(path), **roles)
        assert s.tau == pytest.approx(float(blob["tau"]))
        assert_same_state(s.router, blob["state"])
        # written before R2R's entropy option: they read the entropy the signals carry
        defaults = {"entropy": "signals"} if strategy == "r2r" else {}
        assert s.router.config == defaults | blob["config"] and not s.router.training
        if strategy == "arbitrage":
            assert s.delimiter == blob["delimiter"] and isinstance(s.router, StepRouter)
        else:
            assert isinstance(s.router, R2RRouter) and s.k == blob["config"]["k"]


def test_committed_fusionroute_file_builds_as_saved() -> None:
    path = committed("fusionroute-mixed.pt")
    blob = torch.load(path, weights_only=False)
    roles = {"router": "small", **{e: e for e in reversed(blob["experts"])}}
    s = default_strategy_registry().build_from_artifact("fusionroute", str(path), **roles)
    assert s.experts == list(blob["experts"]) and s.router == "small"
    assert_same_state(s.head, blob["head"])
    assert isinstance(s.router_model, HFModel) and s.router_model.name == blob["router"]
    assert_same_state(s.router_model.model, blob["router_state"])


def test_refused_files_say_why(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt is not a collaboration router file"):
        read_artifact(garbage, "r2r")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(ValueError, match="no 'kind' in it"):
        R2RRouter.load(tensor)
    other = tmp_path / "other.pt"
    StepRouter().save(other)
    with pytest.raises(ValueError, match="other.pt is not a r2r router \\(kind='arbitrage'\\)"):
        R2RRouter.load(other)
    with pytest.raises(ValueError, match="is not a fusionroute router"):
        load_fusionroute(other)
    newer = tmp_path / "newer.pt"
    torch.save({"kind": "arbitrage", "format": FORMAT + 1, "config": {}, "state": {}}, newer)
    with pytest.raises(ValueError, match=f"format {FORMAT + 1}.*reads formats up to {FORMAT}"):
        StepRouter.load(newer)


def test_saved_files_carry_the_format_and_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    router = StepRouter(width=8)
    router.save(path, tau=0.5)
    blob = read_artifact(path, "arbitrage")
    assert blob["format"] == FORMAT and blob["tau"] == 0.5
    again, meta = StepRouter.load(path)
    assert again.config == router.config and meta["tau"] == 0.5
    assert_same_state(again, router.state_dict())
