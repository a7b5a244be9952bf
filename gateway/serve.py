"""Start the gateway: build the app, print the URL and routes, reload on SIGHUP; one process or N workers.

One worker (the default) is one uvicorn process (uvloop + httptools when installed) with the access log off: the
request log and Prometheus already record every request. ``workers > 1`` hands the same per-process server to
``gateway.workers``, which forks that many on one port. Once start-up is over each process applies its runtime
policy (``gateway.runtime_policy``: the garbage collector's settings; ``tuned`` unless told otherwise).

What it leaves out: the supervisor itself (``gateway.workers``), the app (``gateway.app``) and the per-request flow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import TandemConfig
from gateway.route_kinds import PrmResolver
from gateway.runtime_policy import GcPauses, RuntimePolicy, apply_after_startup, policy_named
from gateway.state import Gateway
from gateway.workers import Supervisor, check_worker_config

log = logging.getLogger("tandem")


def _say(msg: str) -> None:
    print(f"tandem: {msg}", file=sys.stderr, flush=True)


def serve(cfg: TandemConfig, config_path: str | None = None, log_level: str = "warning", *,
          prm_resolver: PrmResolver | None = None, workers: int = 1, runtime: str = "tuned") -> int:
    """Run the gateway until interrupted; returns the exit code. ``prm_resolver`` turns a collab route's named
    process reward (``prm: "suite:NAME"``) into one; without it such a route is a config error. ``workers``:
    processes sharing the port (more than one needs Redis, see ``gateway.workers``). ``runtime``: ``tuned``
    or ``default`` (``gateway.runtime_policy``)."""
    policy = policy_named(runtime)
    check_worker_config(cfg, workers)
    _say(f"config: {config_path or 'embedded default (no --config)'}")
    if workers == 1:
        serve_process(cfg, config_path, log_level, prm_resolver=prm_resolver, runtime=policy)
        return 0

    def run_worker(sock: socket.socket, index: int) -> None:
        serve_process(cfg, config_path, log_level, prm_resolver=prm_resolver, runtime=policy, sock=sock, worker=index)

    sup = Supervisor(workers, cfg.server.host, cfg.server.port, run_worker, say=_say)
    return sup.run()


def serve_process(cfg: TandemConfig, config_path: str | None, log_level: str, *, prm_resolver: PrmResolver | None,
                  runtime: RuntimePolicy, sock: socket.socket | None = None, worker: int | None = None) -> None:
    """One gateway process: on ``sock`` (a worker) or binding ``cfg.server`` itself."""
    gw = Gateway(cfg, config_path, prm_resolver=prm_resolver)
    pauses = GcPauses(gw.metrics.observe_gc)
    pauses.install()
    host, port = cfg.server.host, (sock.getsockname()[1] if sock is not None else cfg.server.port)
    who = "" if worker is None else f"worker {worker} (pid {os.getpid()}): "

    def started() -> None:
        if config_path:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(gw, who)))
        if not worker:  # the single process, or worker 0, prints the table
            table = gw.table
            _say(f"serving on http://{host}:{port}/v1  (OpenAI-compatible; try model=\"auto\")")
            for name, r in table.routes.items():
                mark = "  (default: auto)" if name == table.default else ""
                _say(f"  route {name:<24} -> {r.target}{mark}")
        frozen = apply_after_startup(runtime)
        _say(f"{who}ready: health at http://{host}:{port}/health/ready, metrics at /metrics"
             + (f"; {frozen} start-up objects frozen out of GC" if frozen else ""))

    app = create_app(gw, progress=(lambda m: _say(who + m)) if who else _say, on_started=started)

    try:
        import uvloop  # noqa: F401

        loop_impl = "uvloop"
    except ImportError:
        loop_impl = "asyncio"
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, loop=loop_impl,
                            http="httptools", lifespan="on", timeout_keep_alive=30)
    try:
        uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
    finally:
        pauses.uninstall()


async def _reload(gw: Gateway, who: str = "") -> None:
    try:
        names = await gw.reload()
        _say(f"{who}reloaded config: routes {', '.join(names)}")
    except Exception as e:  # noqa: BLE001 - a bad reload keeps the old config running
        _say(f"{who}reload failed, keeping the previous config: {e}")
