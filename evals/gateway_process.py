"""Run ``tandem serve --config`` as a subprocess on a free loopback port — how evals, benchmarks and tests drive a
real gateway over HTTP.

:func:`start_gateway` writes the config (server on 127.0.0.1 and a free port; SQLite request log and spool in the
work folder unless the config names its own), starts the process, waits until ``/health/live`` answers, and returns a
:class:`GatewayProcess`. What it leaves out: anything the gateway does (it is only started and stopped here).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class GatewayProcess:
    proc: subprocess.Popen
    base: str  # root URL, e.g. http://127.0.0.1:PORT
    config_path: Path
    db_url: str
    log_path: Path

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (…/v1)."""
        return self.base + "/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def start_gateway(cfg: dict, workdir: Path, env: dict | None = None, timeout: float = 300.0) -> GatewayProcess:
    """Start ``tandem serve`` with ``cfg`` and wait until it is live (raises with the log's tail if it dies)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = dict(cfg)
    cfg["server"] = {**(cfg.get("server") or {}), "host": "127.0.0.1", "port": port}
    storage = dict(cfg.get("storage") or {})
    storage.setdefault("database_url", f"sqlite:///{workdir / 'tandem.db'}")
    storage.setdefault("spool_dir", str(workdir / "spool"))
    cfg["storage"] = storage
    path = workdir / "tandem.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log_path = workdir / "gateway.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "evals.command", "serve", "--config", str(path)], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                start_new_session=True)
    g = GatewayProcess(proc, f"http://127.0.0.1:{port}", path, storage["database_url"], log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{g.log()[-3000:]}")
        try:
            if httpx.get(g.base + "/health/live", timeout=1).status_code == 200:
                return g
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    g.stop()
    raise RuntimeError(f"gateway not live after {timeout:.0f}s:\n{g.log()[-3000:]}")
