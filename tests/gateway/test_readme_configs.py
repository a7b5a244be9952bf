"""Every whole YAML config the README shows (one with `backends:`) is one the gateway accepts (gateway/config.py),
so the docs cannot rot. Route fragments that lean on the embedded default's backends are left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def _configs() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if re.search(r"^backends:", b, re.M)]


def test_the_readme_shows_configs() -> None:
    assert len(_configs()) >= 2


@pytest.mark.parametrize("block", _configs(), ids=lambda b: b.splitlines()[0][:40])
def test_readme_config_parses(block: str) -> None:
    cfg = parse_config(yaml.safe_load(block))
    assert cfg.routes, "a README config with no routes shows nothing"
