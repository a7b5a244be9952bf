"""The operator's page: ``GET /ui`` (one HTML file, one script, one stylesheet from ``gateway/ui/``) and the JSON it
reads, ``GET /ui/api/overview`` and ``GET /ui/api/requests``.

The page's files hold no data and are served to anyone; every ``/ui/api`` call needs the admin key as
``Authorization: Bearer …`` (the page keeps the key in ``sessionStorage`` and sends it on each fetch; it is never a
cookie, so no other site can make the browser send it), and answers ``Cache-Control: no-store``. The HTML comes with a
strict ``Content-Security-Policy`` (``default-src 'self'``, no inline script or style, no framing); the script puts
logged text into the page with ``textContent`` only.

- ``overview?hours=H`` (default 24, at most 2160): totals; requests, errors and dollars per time bucket per route and
  per key; nearest-rank latency percentiles per route; each router route's mix of chosen candidates and its reasons;
  each collaboration's (and TCAR route's) tokens per member; the routes served now; key names.
- ``requests?limit=N&before=CURSOR&route=R&key_id=K``: up to N (default 50, at most 500) requests, newest first, with
  decision, per-model usage and (where the key logs prompts) prompt and response text cut to
  :data:`TEXT_CAP` characters per message, and ``provenance``: which model wrote which part of the response, as
  ``[{"model", "text"}]`` runs cut with it (None for one plain backend's answer); ``next`` is the cursor of the
  following page (``created_at:id``).

Aggregates run in SQL (``gateway.storage.log_stats``), one after another in a worker thread. The page colours usage by
model, and a collaboration's response by the model that wrote each run (``gateway.provenance``).

What it leaves out: keys (``gateway.admin_keys``, which the page also calls), live updates (the page re-reads on
demand), and any write.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.admin_keys import NO_STORE, check_admin
from gateway.dispatch import BackendRoute
from gateway.errors import InvalidRequest, NotFound
from gateway.http_io import json_response
from gateway.provenance import cut_runs, runs_for
from gateway.state import Gateway
from gateway.storage import log_stats

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
"""The page's Content-Security-Policy: only its own files run, nothing inline, no framing."""
PAGE_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                "x-frame-options": "DENY", "cache-control": "no-cache"}
FILES = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}
MAX_HOURS = 24 * 90
MAX_LIMIT = 500
TEXT_CAP = 4000
"""Characters of each logged message (and of the response) sent to the page; longer ones are cut and marked."""
ALIASES = ("auto", "default")


def _file(name: str) -> bytes:
    return resources.files("gateway").joinpath("ui", name).read_bytes()


def _number(request: Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: '{raw[:40]}' is not a number", param=name) from None
    if not lo <= v <= hi:
        raise InvalidRequest(f"{name}: must be between {lo:g} and {hi:g}", param=name)
    return v


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None or raw == "":
        return None
    t, sep, rid = raw.partition(":")
    try:
        ts = float(t)
    except ValueError:
        ts = float("nan")
    if not sep or not rid or ts != ts:
        raise InvalidRequest("before: expected the 'next' cursor of a previous page (created_at:id)", param="before")
    return ts, rid


def _cut(s: Any) -> tuple[str, bool]:
    text = s if isinstance(s, str) else "" if s is None else str(s)
    return (text[:TEXT_CAP], True) if len(text) > TEXT_CAP else (text, False)


def _content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else content if isinstance(content, str) else str(content)


def page_row(row: dict[str, Any]) -> dict[str, Any]:
    """A logged request as the page shows it: prompt as ``[{role, text, cut}]``, response cut to :data:`TEXT_CAP`, and
    its provenance runs cut there too (None without runs, or with runs that are not of this response)."""
    prompt = row.get("prompt")
    messages: list[dict[str, Any]] | None = None
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        messages = []
        for m in prompt:
            text, cut = _cut(_content_text(m.get("content")))
            messages.append({"role": str(m.get("role", "")), "text": text, "cut": cut})
    elif prompt is not None:
        text, cut = _cut(prompt if isinstance(prompt, str) else str(prompt))
        messages = [{"role": "prompt", "text": text, "cut": cut}]
    response, response_cut = _cut(row.get("response")) if row.get("response") is not None else (None, False)
    runs = cut_runs(runs_for(row.get("response"), row.get("provenance")), TEXT_CAP)
    return {**{k: row.get(k) for k in log_stats.RECENT_COLUMNS if k not in ("prompt", "response", "provenance")},
            "messages": messages, "response": response, "response_cut": response_cut, "provenance": runs}


def _route_kinds(gw: Gateway) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The routes served now (name, kind, candidates, members), router route names (and aliases), and the backend
    names of multi-model routes (collaborations, TCAR) as ``model_chosen`` logs them."""
    table = gw.table
    routes: list[dict[str, Any]] = []
    routers: list[str] = list(ALIASES)
    multi: list[str] = []
    for name, r in (table.routes.items() if table else []):
        d = r.describe()
        routes.append({"name": name, "kind": r.kind, "candidates": d.get("candidates"), "backend": d.get("backend")})
        if r.kind == "router":
            routers.append(name)
        elif r.kind in ("collab", "tcar") and isinstance(r, BackendRoute):
            multi.append(r.backend.name)
    return routes, routers, multi


def register(app: FastAPI, gw: Gateway) -> None:
    """Add ``/ui``, its files and ``/ui/api/*`` to ``app``."""

    @app.get("/ui", include_in_schema=False)
    @app.get("/ui/", include_in_schema=False)
    async def page() -> Response:
        return Response(_file("index.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in FILES:
            raise NotFound(f"no such file: /ui/{name}")
        return Response(_file(name), media_type=FILES[name], headers=PAGE_HEADERS)

    @app.get("/ui/api/overview")
    async def overview(request: Request) -> Response:
        check_admin(gw, request)
        hours = _number(request, "hours", 24.0, 1 / 60, MAX_HOURS)
        until = time.time() + 1.0
        since = until - hours * 3600.0
        bucket = log_stats.bucket_for(until - since)
        routes, routers, multi = _route_kinds(gw)
        e = gw.engine
        jobs = {
            "totals": (log_stats.totals, e, since, until),
            "by_route": (log_stats.series, e, since, until, bucket, "route"),
            "by_key": (log_stats.series, e, since, until, bucket, "key_id"),
            "latency": (log_stats.latency_percentiles, e, since, until),
            "routers": (log_stats.router_mix, e, since, until, routers),
            "collab": (log_stats.collab_share, e, since, until, multi),
        }
        # One worker thread, one query after another: a page load holds one pooled connection at most (its time
        # is measured by python -m bench.ui_load).
        data = await asyncio.to_thread(lambda: {name: f(*args) for name, (f, *args) in jobs.items()})
        keys = await asyncio.to_thread(gw.keys.list)
        return json_response({"window": {"since": since, "until": until, "bucket_s": bucket, "hours": hours},
                              **data, "routes": routes, "default_route": gw.table.default if gw.table else None,
                              "key_names": {k.id: k.name for k in keys}}, headers=NO_STORE)

    @app.get("/ui/api/requests")
    async def recent(request: Request) -> Response:
        check_admin(gw, request)
        limit = int(_number(request, "limit", 50, 1, MAX_LIMIT))
        before = _cursor(request.query_params.get("before"))
        route = request.query_params.get("route") or None
        key_id = request.query_params.get("key_id") or None
        rows = await asyncio.to_thread(log_stats.recent, gw.engine, limit, before, route, key_id)
        nxt = f"{rows[-1]['created_at']!r}:{rows[-1]['id']}" if len(rows) == limit else None
        return json_response({"object": "list", "data": [page_row(r) for r in rows], "next": nxt}, headers=NO_STORE)
