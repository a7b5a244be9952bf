"""The running gateway: backends, routes, storage and limits built from a config, and reloaded from it.

:class:`Gateway` owns every long-lived object of one process (no module-level singletons): the route table, the
request log, the key store, the limit store and the metrics. ``reload()`` re-reads the config file and swaps the
route table atomically; backends whose config did not change are kept (an in-process model is not loaded twice),
removed ones are closed after in-flight requests had time to finish. Backends are built by the backends registry
(``gateway.backends.registry``), routes by the route-kinds registry (``gateway.route_kinds``); collab routes that
name a process reward (``prm: "suite:NAME"``) need the ``prm_resolver`` the command line passes in.

What it leaves out: HTTP (``gateway.app``) and the per-request flow (``gateway.pipeline``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from gateway.backends.base import Backend
from gateway.backends.registry import BackendRegistry, build_backend, default_backend_registry
from gateway.config import TandemConfig, load_config
from gateway.dispatch import RouterRoute, RouteTable
from gateway.limits import LimitStore, make_limit_store
from gateway.metrics import GatewayMetrics
from gateway.paths import cache_dir
from gateway.response_cache import ResponseCache, make_response_cache
from gateway.route_kinds import PrmResolver, RouteKindRegistry, build_routes, default_route_kind_registry
from gateway.storage.agents import AgentStore
from gateway.storage.db import make_engine, migrate, ping
from gateway.storage.keys import ApiKey, KeyStore
from gateway.storage.request_log import RequestLog
from gateway.tracing import Tracer, make_tracer
from routers.embedder import Embedder

log = logging.getLogger("tandem")

KEY_CACHE_S = 5.0  # how long a key lookup is trusted (revocation takes effect within this time)


class Gateway:
    """One gateway process's state."""

    def __init__(self, cfg: TandemConfig, config_path: str | Path | None = None,
                 registry: BackendRegistry | None = None, *, prm_resolver: PrmResolver | None = None,
                 route_kinds: RouteKindRegistry | None = None, tracer: Tracer | None = None):
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.registry = registry or default_backend_registry()
        self.route_kinds = route_kinds or default_route_kind_registry()
        self.prm_resolver = prm_resolver  # named process rewards of collab routes (the command line gives one)
        self.metrics = GatewayMetrics()
        self.backends: dict[str, Backend] = {}
        self._backend_cfgs: dict[str, object] = {}
        self.table: RouteTable | None = None
        self.engine = make_engine(cfg.storage.database_url)
        self.request_log = RequestLog(self.engine, Path(cfg.storage.spool_dir).expanduser())
        self.keys = KeyStore(self.engine)
        self.agents = AgentStore(self.engine)
        self.limits: LimitStore = make_limit_store(cfg.storage.redis_url)
        self.tracer = tracer or make_tracer()  # OpenTelemetry when the OTEL_* variables ask for it (gateway.tracing)
        self.response_cache: ResponseCache = make_response_cache(self.limits.shared_redis, _embed_one)
        self._key_cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._reload_lock = asyncio.Lock()
        self.started_at = time.time()

    async def start(self, progress=print) -> None:
        """Migrate the database, start the log writer, build every backend (in-process models load here)."""
        await asyncio.to_thread(migrate, self.engine)
        await self.request_log.start()
        progress(f"limits: {self.limits.description}")
        progress(f"tracing: {self.tracer.description}")
        await self._apply(self.cfg, progress)
        if self.response_cache.policies:
            progress(f"response cache: {self.response_cache.description}")

    async def _build(self, cfg: TandemConfig, progress) -> dict[str, Backend]:
        out: dict[str, Backend] = {}
        for bcfg in cfg.backends:
            old = self.backends.get(bcfg.name)
            if old is not None and self._backend_cfgs.get(bcfg.name) == bcfg:
                out[bcfg.name] = old
                continue
            t0 = time.perf_counter()
            progress(f"backend {bcfg.name} ({bcfg.kind}): loading…")
            backend = await asyncio.to_thread(build_backend, bcfg, self.registry)
            await backend.load()  # in-process models load their weights here, not per request
            out[bcfg.name] = backend
            progress(f"backend {bcfg.name} ({bcfg.kind}): ready in {time.perf_counter() - t0:.1f}s")
        return out

    async def _apply(self, cfg: TandemConfig, progress) -> None:
        new = await self._build(cfg, progress)
        table = await asyncio.to_thread(build_routes, cfg, new, self.agents, prm_resolver=self.prm_resolver,
                                        kinds=self.route_kinds)
        for route in table.routes.values():  # warm before the swap: no request waits for a model to load
            if isinstance(route, RouterRoute):
                progress(f"router route {route.name}: warm in {await asyncio.to_thread(route.warm):.1f}s")
        removed = [b for name, b in self.backends.items() if new.get(name) is not b]
        self.backends, self.table, self.cfg = new, table, cfg
        self.response_cache.configure(cfg)
        self._backend_cfgs = {b.name: b for b in cfg.backends}
        if removed:
            asyncio.get_running_loop().call_later(30, lambda: asyncio.ensure_future(_close_all(removed)))

    async def reload(self, progress=log.info) -> list[str]:
        """Re-read the config file and swap in its routes; returns the route names now served."""
        if self.config_path is None:
            raise ValueError("this gateway runs the embedded default config; there is no file to reload")
        async with self._reload_lock:
            cfg = load_config(self.config_path)
            await self._apply(cfg, progress)
        return self.table.names() if self.table else []

    async def lookup_key(self, plaintext: str) -> ApiKey | None:
        """Key lookup by hash, cached for a few seconds."""
        now = time.monotonic()
        hit = self._key_cache.get(plaintext)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await asyncio.to_thread(self.keys.lookup, plaintext)
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[plaintext] = (now + KEY_CACHE_S, key)
        return key

    def forget_key(self, key_id: str) -> None:
        """Drop this process's cached lookups of ``key_id`` (after the admin API revoked or changed it); other
        replicas see the change within ``KEY_CACHE_S``."""
        for token, (_, key) in list(self._key_cache.items()):
            if key is not None and key.id == key_id:
                self._key_cache.pop(token, None)

    async def readiness(self) -> dict[str, object]:
        """DB, Redis and each backend, checked concurrently."""
        db = asyncio.to_thread(ping, self.engine)
        redis = self.limits.ping()
        names = list(self.backends)
        results = await asyncio.gather(db, redis, *(self.backends[n].health() for n in names),
                                       return_exceptions=True)
        ok = [r is True for r in results]
        return {
            "database": ok[0],
            "limits": ok[1],
            "backends": dict(zip(names, ok[2:], strict=True)),
            "ready": all(ok),
        }

    async def close(self) -> None:
        await self.request_log.close()
        await _close_all(list(self.backends.values()))
        await self.limits.aclose()
        await asyncio.to_thread(self.tracer.shutdown)  # exports the spans still queued
        self.engine.dispose()


def _embed_one():
    """The response cache's sentence embedder (made when a route first matches semantically; MiniLM loads then)."""
    return Embedder(cache_dir=cache_dir()).embed_one


async def _close_all(backends: list[Backend]) -> None:
    for b in backends:
        try:
            await b.aclose()
        except Exception as e:  # noqa: BLE001 - one backend failing to close must not stop the others
            log.warning("closing backend %s failed: %s", b.name, e)
