"""Aggregates of the request log for the operator's page, computed in SQL: the database groups, the gateway only
reshapes a few hundred result rows, so a page over a large log reads no request rows into Python.

Everything takes a time window ``[since, until)`` (Unix seconds) and runs on SQLite and Postgres alike:

- :func:`totals` — requests, errors, tokens, dollars and mean latency in the window;
- :func:`series` — the same per time bucket and per route (or per key): ``GROUP BY bucket, route``;
- :func:`latency_percentiles` — nearest-rank p50/p90/p99 of latency per route: the value at each rank read off an
  index in latency order (``LIMIT 1 OFFSET rank-1``), so no database needs ``percentile_cont`` and nothing is sorted;
- :func:`router_mix` — for router routes, how often the first router on the path chose each candidate, and its
  reasons (from the logged decision's ``routers[0]``);
- :func:`collab_share` — for collaborations, each member's tokens and dollars (the logged per-model ``usage``
  list, expanded with ``json_each`` on SQLite and ``json_array_elements`` on Postgres);
- :func:`recent` — requests newest first, paged with a keyset ``(created_at, id) < cursor`` and a limit, so page
  N costs what page 1 costs;
- :func:`spend_by_key` — every key's logged requests and dollars (all time).

The indexes these rely on are in ``tables`` (migration 0003: a covering ``ix_requests_window``,
``(route, latency_ms, created_at)``, ``(model_chosen, created_at)`` and ``(key_id, created_at, cost_usd)``). The page load they serve is
measured by ``python -m bench.ui_load``.

What it leaves out: HTTP and auth (``gateway.ui_api``), which routes are routers or collaborations (the caller
passes their names from the live route table), and budgets as the limit store counts them (``gateway.limits``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Integer, and_, case, cast, func, literal_column, or_, select, text

from gateway.storage.tables import requests

PERCENTILES = (50, 90, 99)
"""The latency percentiles reported (nearest rank: the ``ceil(p/100 · n)``-th smallest)."""
BUCKETS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
"""Bucket widths a window is cut into (the smallest giving at most ``MAX_BUCKETS`` buckets)."""
MAX_BUCKETS = 120
MAX_ROUTES = 50
"""Routes whose latency percentiles are computed (the busiest in the window)."""
REASON_TOP = 8
"""Reasons listed per router route (the most frequent; the rest are summed as ``other``)."""


def bucket_for(span_s: float) -> int:
    """The bucket width for a window of ``span_s`` seconds: the smallest of :data:`BUCKETS_S` giving at most
    :data:`MAX_BUCKETS` buckets."""
    for b in BUCKETS_S:
        if span_s / b <= MAX_BUCKETS:
            return b
    return BUCKETS_S[-1]


def _in_window(since: float, until: float) -> Any:
    return and_(requests.c.created_at >= since, requests.c.created_at < until)


def _bucket_expr(dialect: str, bucket_s: int) -> Any:
    """``floor(created_at / bucket_s)`` (created_at is positive, so SQLite's integer cast truncates to the floor;
    Postgres's would round)."""
    b = literal_column(str(int(bucket_s)))
    if dialect == "postgresql":
        return cast(func.floor(requests.c.created_at / b), Integer)
    return cast(requests.c.created_at / b, Integer)


_IS_ERROR = case((requests.c.status != "ok", 1), else_=0)


def totals(engine: Engine, since: float, until: float) -> dict[str, Any]:
    """Requests, errors, prompt and completion tokens, dollars and mean latency in the window."""
    q = select(func.count(), func.coalesce(func.sum(_IS_ERROR), 0), func.coalesce(func.sum(requests.c.prompt_tokens), 0),
               func.coalesce(func.sum(requests.c.completion_tokens), 0),
               func.coalesce(func.sum(requests.c.cost_usd), 0.0), func.avg(requests.c.latency_ms)
               ).where(_in_window(since, until))
    with engine.connect() as conn:
        n, err, p, c, cost, lat = conn.execute(q).one()
    return {"requests": int(n), "errors": int(err), "prompt_tokens": int(p), "completion_tokens": int(c),
            "cost_usd": float(cost), "mean_latency_ms": None if lat is None else float(lat)}


def series(engine: Engine, since: float, until: float, bucket_s: int, by: str = "route") -> list[dict[str, Any]]:
    """Per bucket start (``t``, Unix seconds) and per ``by`` (``route`` or ``key_id``): requests, errors, dollars.
    Rows ordered by ``t`` then group; empty buckets are absent."""
    col = {"route": requests.c.route, "key_id": requests.c.key_id}[by]
    with engine.connect() as conn:
        bucket = _bucket_expr(conn.dialect.name, bucket_s).label("bucket")
        q = (select(bucket, col.label("grp"), func.count().label("n"), func.sum(_IS_ERROR).label("err"),
                    func.sum(requests.c.cost_usd).label("cost"))
             .where(_in_window(since, until)).group_by(literal_column("bucket"), col)
             .order_by(literal_column("bucket"), col))
        rows = conn.execute(q).all()
    return [{"t": int(r.bucket) * int(bucket_s), by: r.grp, "requests": int(r.n), "errors": int(r.err or 0),
             "cost_usd": float(r.cost or 0.0)} for r in rows]


def nearest_rank(n: int, p: int) -> int:
    """The 1-based rank of the ``p``-th percentile of ``n`` sorted values: ``ceil(p·n/100)`` (at least 1)."""
    return max(1, (n * p + 99) // 100)


def latency_percentiles(engine: Engine, since: float, until: float, max_routes: int = MAX_ROUTES
                        ) -> list[dict[str, Any]]:
    """Per route (the ``max_routes`` busiest): request count with a latency, and nearest-rank p50/p90/p99 latency in
    milliseconds. One count per route, then per percentile the value at its rank (``ORDER BY latency_ms LIMIT 1
    OFFSET rank-1``), which walks the ``(route, latency_ms, created_at)`` index in order: no sort of the window."""
    has_latency = and_(_in_window(since, until), requests.c.latency_ms.is_not(None))
    counts = (select(requests.c.route, func.count().label("n")).where(has_latency).group_by(requests.c.route)
              .order_by(func.count().desc(), requests.c.route).limit(int(max_routes)))
    out = []
    with engine.connect() as conn:
        for route, n in conn.execute(counts).all():
            d: dict[str, Any] = {"route": route, "requests": int(n)}
            same = requests.c.route.is_(None) if route is None else requests.c.route == route
            for p in PERCENTILES:
                q = (select(requests.c.latency_ms).where(same, has_latency).order_by(requests.c.latency_ms)
                     .limit(1).offset(nearest_rank(int(n), p) - 1))
                d[f"p{p}_ms"] = float(conn.execute(q).scalar_one())
            out.append(d)
    return out


_FIRST_ROUTER = ("$.routers[0].route", "$.routers[0].chosen", "$.routers[0].reason")


def router_mix(engine: Engine, since: float, until: float, routes: Sequence[str]) -> list[dict[str, Any]]:
    """For rows whose ``route`` is one of ``routes`` (router routes and the aliases that reach them): per router
    route (the decision's ``routers[0].route``) the count per chosen candidate and the most frequent reasons. One
    ``GROUP BY`` over (router, chosen, reason); on SQLite one ``json_extract`` of the three paths parses each
    decision once."""
    if not routes:
        return []
    where = and_(requests.c.route.in_(list(routes)), _in_window(since, until))
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            triple = func.json_extract(requests.c.decision, *_FIRST_ROUTER).label("k")
            raw = conn.execute(select(triple, func.count()).where(where).group_by(literal_column("k"))).all()
            groups = [(*(json.loads(k) if k else (None, None, None)), int(n)) for k, n in raw]
        else:
            parts = [requests.c.decision[("routers", 0, f)].as_string() for f in ("route", "chosen", "reason")]
            groups = [(r, c, why, int(n)) for r, c, why, n in
                      conn.execute(select(*parts, func.count()).where(where).group_by(*parts)).all()]
    out: dict[str, dict[str, Any]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for first, chosen, why, n in groups:
        if first is None:  # an alias that reached a route of another kind
            continue
        d = out.setdefault(first, {"route": first, "requests": 0, "chosen": {}, "reasons": []})
        d["chosen"][chosen or "?"] = d["chosen"].get(chosen or "?", 0) + n
        d["requests"] += n
        r = reasons.setdefault(first, {})
        r[why or ""] = r.get(why or "", 0) + n
    for name, counts in reasons.items():
        items = sorted(counts.items(), key=lambda x: (-x[1], x[0]))
        top = [{"reason": why, "requests": n} for why, n in items[:REASON_TOP]]
        rest = sum(n for _, n in items[REASON_TOP:])
        if rest:
            top.append({"reason": "other", "requests": rest})
        out[name]["reasons"] = top
    return sorted(out.values(), key=lambda d: -d["requests"])


_SHARE_SQL = {
    "sqlite": """
        SELECT r.model_chosen AS route, json_extract(u.value, '$.model') AS member, COUNT(*) AS n,
               SUM(json_extract(u.value, '$.prompt_tokens')) AS p, SUM(json_extract(u.value, '$.completion_tokens')) AS c,
               SUM(json_extract(u.value, '$.cost_usd')) AS cost
        FROM requests AS r, json_each(r.usage) AS u
        WHERE r.model_chosen IN ({names}) AND r.created_at >= :since AND r.created_at < :until
        GROUP BY 1, 2""",
    "postgresql": """
        SELECT r.model_chosen AS route, u->>'model' AS member, COUNT(*) AS n,
               SUM((u->>'prompt_tokens')::bigint) AS p, SUM((u->>'completion_tokens')::bigint) AS c,
               SUM((u->>'cost_usd')::float8) AS cost
        FROM requests AS r CROSS JOIN LATERAL json_array_elements(r.usage) AS u
        WHERE r.model_chosen IN ({names}) AND r.created_at >= :since AND r.created_at < :until
        GROUP BY 1, 2""",
}


def collab_share(engine: Engine, since: float, until: float, models: Sequence[str]) -> list[dict[str, Any]]:
    """For rows whose ``model_chosen`` is one of ``models`` (collaborations' backend names): per collaboration,
    each member's prompt and completion tokens, dollars and the share of completion tokens it wrote."""
    if not models:
        return []
    names = ", ".join(f":m{i}" for i in range(len(models)))
    params: dict[str, Any] = {"since": since, "until": until, **{f"m{i}": m for i, m in enumerate(models)}}
    with engine.connect() as conn:
        sql = _SHARE_SQL.get(conn.dialect.name)
        if sql is None:
            raise NotImplementedError(f"collab_share: no JSON expansion for {conn.dialect.name}")
        rows = conn.execute(text(sql.format(names=names)), params).all()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = out.setdefault(r.route, {"route": r.route, "members": []})
        d["members"].append({"model": r.member, "requests": int(r.n), "prompt_tokens": int(r.p or 0),
                             "completion_tokens": int(r.c or 0), "cost_usd": float(r.cost or 0.0)})
    for d in out.values():
        total = sum(m["completion_tokens"] for m in d["members"])
        for m in d["members"]:
            m["share"] = m["completion_tokens"] / total if total else 0.0
        d["members"].sort(key=lambda m: (-m["completion_tokens"], m["model"] or ""))
    return sorted(out.values(), key=lambda d: d["route"] or "")


RECENT_COLUMNS = ("id", "created_at", "key_id", "route", "model_chosen", "decision", "usage", "prompt_tokens",
                  "completion_tokens", "cost_usd", "latency_ms", "ttft_ms", "status", "http_status", "error", "stream",
                  "prompt", "response", "provenance")


def recent(engine: Engine, limit: int = 50, before: tuple[float, str] | None = None, route: str | None = None,
           key_id: str | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` requests, newest first, older than the cursor ``before`` = ``(created_at, id)`` of the last
    row of the previous page (None: the newest). Optionally of one route or one key."""
    q = select(*(requests.c[c] for c in RECENT_COLUMNS))
    if before is not None:
        t, rid = before
        q = q.where(or_(requests.c.created_at < t, and_(requests.c.created_at == t, requests.c.id < rid)))
    if route is not None:
        q = q.where(requests.c.route == route)
    if key_id is not None:
        q = q.where(requests.c.key_id == key_id)
    q = q.order_by(requests.c.created_at.desc(), requests.c.id.desc()).limit(int(limit))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def spend_by_key(engine: Engine, key_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per key id: logged requests, dollars and the last request's time, over the whole log."""
    q = select(requests.c.key_id, func.count().label("n"), func.sum(requests.c.cost_usd).label("cost"),
               func.max(requests.c.created_at).label("last")).where(requests.c.key_id.is_not(None))
    if key_ids is not None:
        if not key_ids:
            return {}
        q = q.where(requests.c.key_id.in_(list(key_ids)))
    with engine.connect() as conn:
        rows = conn.execute(q.group_by(requests.c.key_id)).all()
    return {r.key_id: {"requests": int(r.n), "cost_usd": float(r.cost or 0.0), "last_at": r.last} for r in rows}
