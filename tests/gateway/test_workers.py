"""``tandem serve --workers N``: the config checks, and two real workers on one port with a real Redis in front of
the upstream stub: a key's budget stays exact when its concurrent requests land on both workers, ``/metrics`` shows
the total of both, every request's log row reaches the shared SQLite file, SIGHUP reloads every worker, and the
supervisor removes its metrics folder when it stops.

What it leaves out: Postgres as the shared request log (``tests/gateway/storage`` covers the writer on it) and
speed (``python -m bench.gateway_overhead --gateway-workers 2``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from sqlalchemy import create_engine, text

from bench.upstream_stub import start_stub
from evals.gateway_process import free_port, stop_process
from gateway.config import TandemConfig
from gateway.errors import ConfigError
from gateway.workers import check_worker_config

ROOT = Path(__file__).resolve().parents[2]
PER_TOKEN = 1000 / 1e6  # output price $0.001 a token, input free: a request's cost is exactly max_tokens tokens
MAX_TOKENS = 4


def _cfg(**storage) -> TandemConfig:
    return TandemConfig.model_validate({
        "storage": storage,
        "backends": [{"name": "stub", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    })


def test_more_than_one_worker_needs_redis() -> None:
    check_worker_config(_cfg(), 1)  # one worker: in-process limits are fine
    check_worker_config(_cfg(redis_url="redis://127.0.0.1:6379/0"), 4)
    with pytest.raises(ConfigError, match="storage.redis_url"):
        check_worker_config(_cfg(), 2)
    with pytest.raises(ConfigError, match="in-memory SQLite"):
        check_worker_config(_cfg(redis_url="redis://h/0", database_url="sqlite:///:memory:"), 2)
    with pytest.raises(ConfigError, match="at least 1"):
        check_worker_config(_cfg(), 0)


def test_cli_refuses_workers_without_redis(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"database_url": f"sqlite:///{tmp_path / 't.db'}", "spool_dir": str(tmp_path / "spool")},
        "backends": [{"name": "stub", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    }))
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--workers", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "needs storage.redis_url" in out.stderr


# ---------------------------------------------------------------------------------------------------- two workers


@pytest.fixture
def stub():
    proc, url = start_stub(tokens=16)
    yield url
    proc.terminate()
    proc.wait(5)


def _write_config(path: Path, port: int, stub_url: str, redis_url: str, work: Path, extra_route: bool = False):
    backends = [{"name": "stub", "kind": "openai", "base_url": stub_url,
                 "price": {"input_per_mtok": 0, "output_per_mtok": 1000}}]
    if extra_route:
        backends.append({"name": "stub-two", "kind": "openai", "base_url": stub_url})
    path.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {"require_keys": True},
        "storage": {"database_url": f"sqlite:///{work / 'log.db'}", "spool_dir": str(work / "spool"),
                    "redis_url": redis_url},
        "backends": backends, "default_route": "stub",
    }))


@pytest.fixture
def two_workers(stub, redis_flush, tmp_path):
    port = free_port()
    cfg = tmp_path / "tandem.yaml"
    _write_config(cfg, port, stub, redis_flush, tmp_path)
    log = (tmp_path / "gateway.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--workers", "2"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    logtext = lambda: (tmp_path / "gateway.log").read_text(errors="replace")  # noqa: E731
    deadline = time.monotonic() + 120
    while logtext().count("ready: health") < 2:  # both workers have started
        assert proc.poll() is None, logtext()
        assert time.monotonic() < deadline, logtext()
        time.sleep(0.2)
    yield proc, base, cfg, tmp_path, logtext
    stop_process(proc)
    log.close()


def _create_key(db_url: str, budget: float) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--db", db_url, "--budget",
                          str(budget)], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["key"]


def _metric(body: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children()


def test_budget_exact_and_metrics_summed_over_two_workers(two_workers) -> None:
    proc, base, _cfg_path, work, logtext = two_workers
    assert len(_workers(proc)) == 2
    served_budget = 25
    key = _create_key(f"sqlite:///{work / 'log.db'}", served_budget * MAX_TOKENS * PER_TOKEN)
    total = 100
    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}

    async def run() -> tuple[list[int], dict[int, int]]:
        # Many connections, so SO_REUSEPORT spreads them over both workers.
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60,
                                     headers={"authorization": f"Bearer {key}"}) as client:
            codes = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(total)))
            per_worker = {}
            for w in _workers(proc):  # the client's keep-alive connections are still open here
                per_worker[w.pid] = sum(1 for c in w.net_connections("tcp")
                                        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == int(
                                            base.rsplit(":", 1)[1]))
            return [r.status_code for r in codes], per_worker

    codes, per_worker = asyncio.run(run())
    assert codes.count(200) == served_budget, (codes, logtext()[-2000:])
    assert codes.count(429) == total - served_budget
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker

    # /metrics on any worker (fresh connections land on either) shows both workers' counts.
    for _ in range(6):
        m = httpx.get(base + "/metrics", headers={"connection": "close"}).text
        assert _metric(m, "tandem_requests_total", route="stub", status="ok") == served_budget
        assert _metric(m, "tandem_requests_total", route="stub", status="error") == total - served_budget

    # Every request's row reaches the one SQLite file, written by both workers.
    eng = create_engine(f"sqlite:///{work / 'log.db'}")
    deadline = time.monotonic() + 20
    while True:
        with eng.connect() as c:
            ok, err, cost = c.execute(text(
                "select sum(status='ok'), sum(status='error'), coalesce(sum(cost_usd), 0) from requests")).one()
        if (ok or 0) + (err or 0) >= total or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    eng.dispose()
    assert (ok, err) == (served_budget, total - served_budget)
    assert cost == pytest.approx(served_budget * MAX_TOKENS * PER_TOKEN)


def test_sighup_reloads_every_worker_and_stop_cleans_up(two_workers, stub, redis_flush) -> None:
    proc, base, cfg_path, work, logtext = two_workers
    port = int(base.rsplit(":", 1)[1])
    _write_config(cfg_path, port, stub, redis_flush, work, extra_route=True)
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while logtext().count("reloaded config") < 2:
        assert time.monotonic() < deadline, logtext()
        time.sleep(0.2)
    for _ in range(8):  # fresh connections: either worker answers, both know the new route
        r = httpx.get(base + "/v1/models", headers={"connection": "close"})
        assert "stub-two" in [m["id"] for m in r.json()["data"]]
    metrics_dir = re.search(r"metrics in (\S+)", logtext()).group(1)
    assert Path(metrics_dir).is_dir()
    workers = _workers(proc)
    stop_process(proc)
    assert proc.returncode == 0, logtext()[-2000:]
    assert not Path(metrics_dir).exists()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_workers_do_not_outlive_a_killed_supervisor(two_workers) -> None:
    proc, base, *_ = two_workers
    workers = _workers(proc)
    assert len(workers) == 2
    proc.kill()
    proc.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/health/live", timeout=2)
