"""Start the gateway process: build the app, print the URL and routes, reload on SIGHUP.

One uvicorn worker (uvloop + httptools when installed) with the access log off: the request log and Prometheus
already record every request. What it leaves out: several workers per process — run replicas instead (deploy/).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import TandemConfig
from gateway.route_kinds import PrmResolver
from gateway.state import Gateway

log = logging.getLogger("tandem")


def _say(msg: str) -> None:
    print(f"tandem: {msg}", file=sys.stderr, flush=True)


def serve(cfg: TandemConfig, config_path: str | None = None, log_level: str = "warning", *,
          prm_resolver: PrmResolver | None = None) -> None:
    """Run the gateway until interrupted. ``prm_resolver`` turns a collab route's named process reward
    (``prm: "suite:NAME"``) into one; without it such a route is a config error."""
    gw = Gateway(cfg, config_path, prm_resolver=prm_resolver)
    host, port = cfg.server.host, cfg.server.port

    def started() -> None:
        if config_path:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(gw)))
        table = gw.table
        _say(f"serving on http://{host}:{port}/v1  (OpenAI-compatible; try model=\"auto\")")
        for name, r in table.routes.items():
            mark = "  (default: auto)" if name == table.default else ""
            _say(f"  route {name:<24} -> {r.target}{mark}")
        _say(f"ready: health at http://{host}:{port}/health/ready, metrics at /metrics")

    _say(f"config: {config_path or 'embedded default (no --config)'}")
    app = create_app(gw, progress=_say, on_started=started)

    try:
        import uvloop  # noqa: F401

        loop_impl = "uvloop"
    except ImportError:
        loop_impl = "asyncio"
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, loop=loop_impl,
                http="httptools", lifespan="on", timeout_keep_alive=30)


async def _reload(gw: Gateway) -> None:
    try:
        names = await gw.reload()
        _say(f"reloaded config: routes {', '.join(names)}")
    except Exception as e:  # noqa: BLE001 - a bad reload keeps the old config running
        _say(f"reload failed, keeping the previous config: {e}")
