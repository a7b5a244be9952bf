"""Load time of the operator's page (``/ui``) on an empty request log and on a large one, in real headless Chromium.

``python -m bench.ui_load [--rows 100000] [--repeats 5] [--screenshots docs] [--json]`` seeds a fresh SQLite request
log with ``--rows`` synthetic requests over the last 24 hours (in bulk, straight into the ``requests`` table: four
routes — two backend routes, a router route over them and an R2R collaboration of the zoo's small and large models —
five keys, errors, router decisions with reasons, per-model usage, logged prompts), starts ``tandem serve`` on it (the
upstream stub behind the backend routes, so every route the log names is served), and for an empty log and the
seeded one measures:

- ``page_ms``: in Chromium, from the page script starting its load (after login) until every API call the page makes
  (``/ui/api/overview``, ``/ui/api/requests``, ``/admin/keys``) answered and everything is drawn — the page's own
  ``data-load-ms``; and ``nav_ms``, from navigation start to the same moment (HTML, script and styles included);
- ``api_ms``: each of those calls alone over HTTP (httpx), wall time.

Each is the median of ``--repeats`` loads after one warm-up. With ``--screenshots DIR`` it writes ``DIR/ui.png``
(the seeded page's top: totals, charts, latency, routers, collaborations, keys). The numbers depend on the machine and
its load; compare the two logs of one run, not runs on different machines.

What it leaves out: Postgres (the same SQL runs there; not timed here), concurrent viewers, and logs over 24 hours.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.chromium_cdp import Chromium, find_chromium
from bench.upstream_stub import start_stub
from evals.gateway_process import start_gateway, stop_process
from gateway.storage.db import make_engine, migrate
from gateway.storage.request_log import LogRow, write_rows

ADMIN = "bench-ui-admin-key"
KEYS = [("key_alpha", "alpha"), ("key_beta", "beta"), ("key_gamma", "gamma"), ("key_delta", "delta"),
        ("key_eval", "eval-runner")]
PRICES = {"stub-cheap": (1e-6, 2e-6), "stub-dear": (10e-6, 30e-6), "small": (0.2e-6, 0.2e-6), "large": (2e-6, 2e-6)}
REASONS = ["random: cheap", "random: dear"]
ZOO = Path(__file__).resolve().parent.parent / "evals" / "zoo" / "models"


def _usage(model: str, p: int, c: int) -> dict[str, Any]:
    pin, pout = PRICES[model]
    return {"model": model, "prompt_tokens": p, "cached_tokens": 0, "completion_tokens": c, "cost_usd": p * pin + c * pout,
            "seconds": 0.0}


def synthetic_rows(n: int, now: float, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` request-log rows over the 24 hours before ``now`` (busier in the day, a few error bursts)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = now - 86400 * (1 - math.sqrt(rng.random()))  # more recent traffic
        route = rng.choices(["pick", "cheap", "dear", "r2r"], weights=[5, 3, 1, 2])[0]
        key_id, _ = rng.choices(KEYS, weights=[5, 3, 2, 1, 4])[0]
        p, c = rng.randint(20, 400), rng.randint(4, 300)
        status, http, err = "ok", 200, None
        burst = 40_000 < (now - t) < 43_000
        if rng.random() < (0.25 if burst else 0.02):
            status, http, err = "error", rng.choice([502, 503, 429]), "BackendUnavailable: upstream refused"
        decision: dict[str, Any]
        if route == "pick":
            chosen = "cheap" if rng.random() < 0.7 else "dear"
            why = REASONS[chosen == "dear"]
            decision = {"route": "pick", "chosen": chosen, "backend": f"stub-{chosen}", "kind": "router",
                        "reason": why + "; direct route", "failures": [],
                        "routers": [{"route": "pick", "kind": "router", "router": "random", "chosen": chosen,
                                     "scores": {}, "reason": why, "fallbacks": []}]}
            model, usage = f"stub-{chosen}", [_usage(f"stub-{chosen}", p, c)]
        elif route == "r2r":
            large = int(c * rng.uniform(0.05, 0.3))
            decision = {"route": "r2r", "chosen": "r2r", "backend": "r2r", "kind": "collab", "reason": "direct route",
                        "failures": []}
            model, usage = "r2r", [_usage("small", p, c - large), _usage("large", p, large)]
        else:
            decision = {"route": route, "chosen": route, "backend": f"stub-{route}", "kind": "backend",
                        "reason": "direct route", "failures": []}
            model, usage = f"stub-{route}", [_usage(f"stub-{route}", p, c)]
        base_ms = {"pick": 180, "cheap": 120, "dear": 600, "r2r": 900}[route]
        latency = base_ms * rng.lognormvariate(0, 0.5)
        logged = key_id != "key_eval"
        out.append(LogRow(
            id=f"seed{i:08d}", created_at=t, key_id=key_id, route=route, model_chosen=model, decision=decision,
            usage=usage, prompt_tokens=p, completion_tokens=c, cost_usd=sum(u["cost_usd"] for u in usage),
            latency_ms=latency, ttft_ms=latency / 4, status=status, http_status=http, error=err, stream=i % 2 == 0,
            prompt=[{"role": "user", "content": f"question {i}: how many rows are in table t{i % 17}?"}] if logged else None,
            response=f"answer {i}" if logged else None, eval_run="seed" if key_id == "key_eval" else None,
        ).to_params())
    return out


def seed(db_url: str, n: int, now: float) -> None:
    """Migrate ``db_url`` and write ``n`` synthetic rows and the bench's keys (bulk inserts, 5000 a transaction)."""
    from sqlalchemy import insert

    from gateway.storage.tables import api_keys

    engine = make_engine(db_url)
    migrate(engine)
    rows = synthetic_rows(n, now)
    for i in range(0, len(rows), 5000):
        write_rows(engine, rows[i:i + 5000])
    with engine.begin() as conn:
        conn.execute(insert(api_keys), [{"id": kid, "name": name, "key_hash": f"{j:064x}", "created_at": now - 90000,
                                         "budget_usd": [50.0, 20.0, None, 5.0, None][j], "rpm": None, "tpm": None,
                                         "log_prompts": kid != "key_eval", "revoked": False}
                                        for j, (kid, name) in enumerate(KEYS)])
    engine.dispose()


def gateway_config(stub_url: str, router_artifact: str) -> dict[str, Any]:
    backends: list[dict[str, Any]] = [
        {"name": "stub-cheap", "kind": "openai", "base_url": stub_url, "price": {"input_per_mtok": 1, "output_per_mtok": 2}},
        {"name": "stub-dear", "kind": "openai", "base_url": stub_url,
         "price": {"input_per_mtok": 10, "output_per_mtok": 30}}]
    routes: list[dict[str, Any]] = [
        {"name": "cheap", "backend": "stub-cheap"}, {"name": "dear", "backend": "stub-dear"},
        {"name": "pick", "kind": "router", "router": "random", "artifact": router_artifact,
         "candidates": ["cheap", "dear"]}]
    if (ZOO / "small").exists() and (ZOO / "large").exists():  # the collaboration's share needs it served
        backends += [{"name": m, "kind": "local", "path": str(ZOO / m)} for m in ("small", "large")]
        routes.append({"name": "r2r", "kind": "collab", "strategy": "r2r", "members": {"slm": "small", "llm": "large"},
                       "params": {"tau": 1.0}})
    return {"backends": backends, "routes": routes, "default_route": "cheap", "auth": {"require_keys": True}}


def _router(path: Path) -> str:
    from routers.base import Record
    from routers.registry import default_router_registry

    recs = [Record(prompt=f"q{i}", candidate=c, score=s, cost=0.01) for i in range(10)
            for c, s in (("cheap", 0.0), ("dear", 1.0))]
    default_router_registry().create("random").fit(recs).save(path)
    return str(path)


API_CALLS = ("/ui/api/overview?hours=24", "/ui/api/requests?limit=50", "/admin/keys")


def measure(base: str, binary: str, repeats: int, shot: Path | None) -> dict[str, Any]:
    """Median page and API times against the gateway at ``base``."""
    headers = {"authorization": f"Bearer {ADMIN}"}
    api: dict[str, list[float]] = {p: [] for p in API_CALLS}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for rep in range(repeats + 1):
            for p in API_CALLS:
                t0 = time.perf_counter()
                r = client.get(p)
                r.raise_for_status()
                if rep:
                    api[p].append((time.perf_counter() - t0) * 1000)
    page, nav = [], []
    with Chromium(binary, width=1400, height=1000, timeout_s=180) as br:
        br.navigate(base + "/ui")
        br.wait_for("document.body.dataset.view === 'login'", timeout_s=60)
        br.eval(f"sessionStorage.setItem('tandem-admin-key', {json.dumps(ADMIN)})")
        for rep in range(repeats + 1):
            br.send("Page.reload", ignoreCache=True)
            time.sleep(0.05)
            br.wait_for("document.body && document.body.dataset.loaded === '1'", timeout_s=120)
            ms = float(br.eval("document.body.dataset.loadMs"))
            nav_ms = float(br.eval("document.body.dataset.loadedAt"))
            if rep:
                page.append(ms)
                nav.append(nav_ms)
        if br.exceptions:
            raise RuntimeError(f"the page threw: {br.exceptions}")
        requests_shown = int(br.eval("document.getElementById('requests').dataset.rows"))
        if shot is not None:
            br.screenshot(shot, max_height=2300)
    med = statistics.median
    return {"page_ms": med(page), "nav_ms": med(nav), "api_ms": {p: med(v) for p, v in api.items()},
            "requests_shown": requests_shown}


def run(rows: int, repeats: int, screenshots: Path | None) -> dict[str, Any]:
    binary = find_chromium()
    if binary is None:
        raise SystemExit("chromium is required (apt-get install chromium)")
    stub, url = start_stub(tokens=4)
    out: dict[str, Any] = {"rows": rows, "repeats": repeats}
    try:
        with tempfile.TemporaryDirectory(prefix="tandem-ui-load-") as tmp:
            work = Path(tmp)
            cfg = gateway_config(url, _router(work / "random.pkl"))
            for label, n in (("empty", 0), ("seeded", rows)):
                db = f"sqlite:///{work / label / 'tandem.db'}"
                (work / label).mkdir()
                t0 = time.perf_counter()
                seed(db, n, time.time())
                seeded_s = time.perf_counter() - t0
                g = start_gateway({**cfg, "storage": {"database_url": db, "spool_dir": str(work / label / "spool")}},
                                  work / label, env={"TANDEM_ADMIN_KEY": ADMIN})
                try:
                    shot = screenshots / "ui.png" if screenshots is not None and label == "seeded" else None
                    out[label] = {"log_rows": n, "seed_s": seeded_s, **measure(g.base, binary, repeats, shot)}
                finally:
                    g.stop()
    finally:
        stop_process(stub)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--screenshots", type=Path, help="folder for ui.png (the seeded page)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    res = run(a.rows, a.repeats, a.screenshots)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"page at /ui, median of {a.repeats} loads (Chromium headless; API calls: {', '.join(API_CALLS)})")
    print(f"{'log rows':>10} {'page ms':>9} {'nav ms':>9}  " + "  ".join(f"{c.split('?')[0]:>18}" for c in API_CALLS))
    for label in ("empty", "seeded"):
        r = res[label]
        print(f"{r['log_rows']:>10} {r['page_ms']:>9.0f} {r['nav_ms']:>9.0f}  "
              + "  ".join(f"{r['api_ms'][c]:>15.0f} ms" for c in API_CALLS))
    print(f"seeded / empty page time: {res['seeded']['page_ms'] / max(res['empty']['page_ms'], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
