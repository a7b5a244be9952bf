"""The page's aggregates (``gateway.storage.log_stats``) on SQLite and a real PostgreSQL server, each against a
reference computed in Python from the same rows; the keyset pages of ``recent``; the 0003 indexes in use."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest
from sqlalchemy import Engine, text

from gateway.storage import log_stats as ls
from gateway.storage.request_log import LogRow, write_rows
from tests.gateway.storage import Db, db, migrated  # noqa: F401

NOW = 1_800_000_000.0
SINCE, UNTIL = NOW - 86400, NOW + 1


def _rows(n: int = 600, seed: int = 0) -> list[LogRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        route = rng.choice(["pick", "cheap", "duo", "auto"])
        t = NOW - rng.uniform(0, 2 * 86400)  # half of them outside the window
        if route in ("pick", "auto"):
            chosen = rng.choice(["cheap", "dear"])
            dec = {"route": route, "chosen": chosen, "kind": "router", "reason": "x",
                   "routers": [{"route": "pick", "chosen": chosen, "reason": f"why-{chosen}-{rng.randint(0, 9)}"}]}
            usage = [{"model": f"b-{chosen}", "prompt_tokens": 3, "completion_tokens": 2, "cost_usd": 0.01}]
            model = f"b-{chosen}"
        elif route == "duo":
            dec = {"route": "duo", "chosen": "duo", "kind": "collab", "reason": ""}
            usage = [{"model": "s", "prompt_tokens": 5, "completion_tokens": rng.randint(0, 9), "cost_usd": 0.001},
                     {"model": "l", "prompt_tokens": 5, "completion_tokens": rng.randint(0, 3), "cost_usd": 0.01}]
            model = "duo"
        else:
            dec, model = {"route": "cheap", "chosen": "cheap", "kind": "backend", "reason": ""}, "b-cheap"
            usage = [{"model": "b-cheap", "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0001}]
        rows.append(LogRow(id=f"r{i:05d}", created_at=t if i % 50 else NOW - 10.0, route=route, model_chosen=model,
                           key_id=rng.choice(["k1", "k2", None]), decision=dec, usage=usage,
                           prompt_tokens=sum(u["prompt_tokens"] for u in usage),
                           completion_tokens=sum(u["completion_tokens"] for u in usage),
                           cost_usd=sum(u["cost_usd"] for u in usage),
                           latency_ms=None if i % 37 == 0 else rng.expovariate(1 / 40),
                           status="error" if rng.random() < 0.1 else "ok"))
    return rows


@pytest.fixture
def logged(migrated: Engine) -> tuple[Engine, list[LogRow]]:  # noqa: F811
    rows = _rows()
    write_rows(migrated, [r.to_params() for r in rows])
    return migrated, [r for r in rows if SINCE <= r.created_at < UNTIL]


def ref_rank(values: list[float], p: int) -> float:
    """Nearest-rank percentile, written from its definition: the smallest v with at least p% of values <= v."""
    s = sorted(values)
    for v in s:
        if sum(1 for x in s if x <= v) * 100 >= p * len(s):
            return v
    raise AssertionError("unreachable")


def test_nearest_rank() -> None:
    for n in range(1, 60):
        vals = [float(i) for i in range(1, n + 1)]
        for p in (1, 50, 90, 99, 100):
            assert vals[ls.nearest_rank(n, p) - 1] == ref_rank(vals, p), (n, p)


def test_bucket_for() -> None:
    assert ls.bucket_for(3600) == 60 and ls.bucket_for(86400) == 900 and ls.bucket_for(7 * 86400) == 3 * 3600
    for span in (60, 3600, 86400, 30 * 86400):
        assert span / ls.bucket_for(span) <= ls.MAX_BUCKETS


def test_totals_and_series_match_python(logged) -> None:
    engine, rows = logged
    t = ls.totals(engine, SINCE, UNTIL)
    assert t["requests"] == len(rows) and t["errors"] == sum(r.status != "ok" for r in rows)
    assert t["cost_usd"] == pytest.approx(sum(r.cost_usd for r in rows))
    assert t["completion_tokens"] == sum(r.completion_tokens for r in rows)
    bucket = ls.bucket_for(UNTIL - SINCE)
    for by in ("route", "key_id"):
        ref: dict[tuple[int, str | None], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        for r in rows:
            cell = ref[(math.floor(r.created_at / bucket) * bucket, getattr(r, by))]
            cell[0] += 1
            cell[1] += r.status != "ok"
            cell[2] += r.cost_usd
        got = {(s["t"], s[by]): [s["requests"], s["errors"], s["cost_usd"]] for s in ls.series(
            engine, SINCE, UNTIL, bucket, by)}
        assert got.keys() == ref.keys()
        for k, (n, e, c) in ref.items():
            assert got[k][:2] == [n, e] and got[k][2] == pytest.approx(c)


def test_latency_percentiles_match_reference(logged) -> None:
    engine, rows = logged
    got = {d["route"]: d for d in ls.latency_percentiles(engine, SINCE, UNTIL)}
    by_route: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.latency_ms is not None:
            by_route[r.route].append(r.latency_ms)
    assert got.keys() == by_route.keys()
    for route, vals in by_route.items():
        assert got[route]["requests"] == len(vals)
        for p in ls.PERCENTILES:
            assert got[route][f"p{p}_ms"] == pytest.approx(ref_rank(vals, p)), (route, p)
    assert len(ls.latency_percentiles(engine, SINCE, UNTIL, max_routes=2)) == 2


def test_router_mix_counts_first_router_choices_and_reasons(logged) -> None:
    engine, rows = logged
    mix = ls.router_mix(engine, SINCE, UNTIL, ["pick", "auto", "cheap"])
    assert [m["route"] for m in mix] == ["pick"]  # 'cheap' rows have no router decision
    routed = [r for r in rows if r.route in ("pick", "auto")]
    assert mix[0]["requests"] == len(routed)
    assert mix[0]["chosen"] == dict(Counter(r.decision["routers"][0]["chosen"] for r in routed))
    reasons = Counter(r.decision["routers"][0]["reason"] for r in routed)
    top = sorted(reasons.items(), key=lambda x: (-x[1], x[0]))
    got = mix[0]["reasons"]
    assert [(g["reason"], g["requests"]) for g in got[:ls.REASON_TOP]] == top[:ls.REASON_TOP]
    assert got[-1] == {"reason": "other", "requests": sum(n for _, n in top[ls.REASON_TOP:])}
    assert ls.router_mix(engine, SINCE, UNTIL, []) == []


def test_collab_share_expands_usage_per_member(logged) -> None:
    engine, rows = logged
    got = ls.collab_share(engine, SINCE, UNTIL, ["duo"])
    assert [g["route"] for g in got] == ["duo"]
    members = {m["model"]: m for m in got[0]["members"]}
    duo = [r for r in rows if r.model_chosen == "duo"]
    for name in ("s", "l"):
        comp = sum(u["completion_tokens"] for r in duo for u in r.usage if u["model"] == name)
        assert members[name]["completion_tokens"] == comp and members[name]["requests"] == len(duo)
        assert members[name]["cost_usd"] == pytest.approx(sum(u["cost_usd"] for r in duo for u in r.usage
                                                              if u["model"] == name))
    total = sum(m["completion_tokens"] for m in members.values())
    assert members["s"]["share"] == pytest.approx(members["s"]["completion_tokens"] / total)
    assert ls.collab_share(engine, SINCE, UNTIL, []) == []


def test_recent_pages_with_a_keyset_cursor(logged) -> None:
    engine, _ = logged
    with engine.connect() as c:
        all_ids = [r.id for r in c.execute(text("select id from requests order by created_at desc, id desc"))]
    seen, cursor = [], None
    while True:
        page = ls.recent(engine, 7, cursor)
        seen += [r["id"] for r in page]
        if len(page) < 7:
            break
        cursor = (page[-1]["created_at"], page[-1]["id"])
    assert seen == all_ids  # every row once, newest first, ties (same created_at) broken by id
    tied = [r for r in ls.recent(engine, 100) if r["created_at"] == NOW - 10.0]
    assert len(tied) == 12 and [r["id"] for r in tied] == sorted((r["id"] for r in tied), reverse=True)
    only = ls.recent(engine, 50, route="duo", key_id="k1")
    assert only and all(r["route"] == "duo" and r["key_id"] == "k1" for r in only)


def test_spend_by_key(logged, migrated) -> None:  # noqa: F811
    engine, _ = logged
    rows = _rows()
    got = ls.spend_by_key(engine)
    assert set(got) == {"k1", "k2"}
    for k in ("k1", "k2"):
        mine = [r for r in rows if r.key_id == k]
        assert got[k]["requests"] == len(mine) and got[k]["cost_usd"] == pytest.approx(sum(r.cost_usd for r in mine))
        assert got[k]["last_at"] == max(r.created_at for r in mine)
    assert set(ls.spend_by_key(engine, ["k2", "k9"])) == {"k2"} and ls.spend_by_key(engine, []) == {}


def test_window_aggregates_use_the_0003_indexes(logged, db: Db) -> None:  # noqa: F811
    if db.kind != "sqlite":
        pytest.skip("query plans are checked on SQLite (Postgres picks by statistics)")
    engine, _ = logged
    plans = {
        "ix_requests_window": "SELECT route, count(*), sum(cost_usd) FROM requests WHERE created_at >= 0 AND "
                              "created_at < 2e9 GROUP BY route",
        "ix_requests_route_latency_ms_created_at": "SELECT latency_ms FROM requests WHERE route = 'pick' AND "
                                                    "created_at >= 0 AND latency_ms IS NOT NULL ORDER BY latency_ms "
                                                    "LIMIT 1 OFFSET 3",
        "ix_requests_key_id_created_at_cost_usd": "SELECT key_id, count(*), sum(cost_usd), max(created_at) FROM "
                                                  "requests WHERE key_id IN ('k1') GROUP BY key_id",
    }
    with engine.connect() as c:
        for index, sql in plans.items():
            plan = " ".join(str(r[-1]) for r in c.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert index in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan
