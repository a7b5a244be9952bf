"""SQL suite: execution checker on right, wrong and malformed queries, and a database nothing can change."""

from __future__ import annotations

import sqlite3
import time

import pytest

from evals.suites.sql import SqlSuite, rows_match
from evals.suites.sql_schemas import SCHEMA_NAMES, SCHEMAS, QueryError, ddl, run_query


@pytest.fixture(scope="module")
def suite() -> SqlSuite:
    return SqlSuite()


def ex(suite, template: str, db: str | None = None):
    return next(e for e in suite.examples("train", 3000)
                if e.meta["template"] == template and (db is None or e.meta["db"] == db))


def counts(db: str) -> dict[str, int]:
    return {t: run_query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in SCHEMAS[db].rows}


def test_databases_hold_the_generated_rows():
    for db in SCHEMA_NAMES:
        s = SCHEMAS[db]
        assert counts(db) == {t: len(rows) for t, rows in s.rows.items()}
        ref = sqlite3.connect(":memory:")  # an unguarded twin built from the same DDL and rows
        for stmt in ddl(s):
            ref.execute(stmt)
        for t, rows in s.rows.items():
            ref.executemany(f"INSERT INTO {t} VALUES ({','.join('?' * len(rows[0]))})", rows)
        q = f"SELECT * FROM {s.bridge.name} ORDER BY id"
        assert run_query(db, q) == ref.execute(q).fetchall()
        for t in (s.a, s.b):  # labels unique, ranked numbers distinct
            assert len(set(s.column_values(t.name, t.label))) == len(s.rows[t.name])
            for col in t.nums:
                assert len(set(s.column_values(t.name, col))) == len(s.rows[t.name])


def test_gold_queries_run_and_are_mostly_non_empty(suite):
    test = suite.examples("test")
    empty = sum(not run_query(e.meta["db"], e.final) for e in test)
    assert empty <= 0.05 * len(test)
    assert {e.meta["tier"] for e in test} == {1, 2, 3, 4, 5}
    assert all(e.prompt.startswith(f"db {e.meta['db']}: ") for e in test)


def test_right_answers_including_equivalent_queries(suite):
    e = ex(suite, "t3_count", "shop")
    assert suite.check(e, e.answer).score == 1.0
    name = e.final.split("'")[1]
    alt = f"select count(*) from orders where cid in (select id from customers where name='{name}');"
    if "products" in e.final:
        alt = f"select count(*) from orders where pid in (select id from products where name='{name}');"
    assert suite.check(e, alt).detail == "ok"
    assert suite.check(e, f"answer: {e.final}\nmore text").score == 1.0


def test_order_matters_only_when_gold_orders(suite):
    e = ex(suite, "t1_sorted")
    flipped = e.final + " DESC" if not e.final.endswith("DESC") else e.final[: -len(" DESC")]
    assert suite.check(e, flipped).detail == "wrong result"
    e = ex(suite, "t2_compare")
    assert suite.check(e, e.final + " ORDER BY 1 DESC").score == 1.0
    assert rows_match([(1, "a"), (2.0, "b")], [(2, "b"), (1.0000000001, "a")], ordered=False)
    assert not rows_match([(1,)], [(1,), (1,)], ordered=False)  # multisets, not sets


def test_wrong_and_malformed(suite):
    e = ex(suite, "t2_count_cat")
    wrong = e.final.replace("COUNT(*)", "COUNT(*) + 1")
    assert suite.check(e, wrong).detail == "wrong result"
    for junk, reason in [("", "malformed"), ("hello world", "sql error"), ("SELECT nope FROM nowhere", "sql error"),
                         ("SELECT \u00e9\u4e2d FROM x", "sql error"), ("SELECT " + "1+" * 50_000 + "1", "sql error"),
                         ("SELECT 1; SELECT 2", "sql error"), ("-- just a comment", "not a query")]:
        r = suite.check(e, junk)
        assert r.score == 0.0 and r.step_scores is None and r.detail.startswith(reason), (junk[:40], r)


def test_runaway_queries_are_stopped(suite):
    e = ex(suite, "t1_count")
    loop = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT COUNT(*) FROM c"
    t0 = time.monotonic()
    r = suite.check(e, loop)
    assert r.detail == "timeout" and time.monotonic() - t0 < 5
    r = suite.check(e, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c")
    assert r.score == 0.0 and r.detail in ("too many rows", "timeout")
    assert suite.check(e, "SELECT length(randomblob(1000000000))").score == 0.0
    assert suite.check(e, "SELECT length(printf('%.*c', 1000000000, 'x'))").score == 0.0
    with pytest.raises(QueryError, match="too many rows"):
        run_query("shop", "SELECT * FROM orders a, orders b", max_rows=100)


@pytest.mark.parametrize("attack", [
    "DROP TABLE orders", "DELETE FROM orders", "UPDATE products SET price = 0", "INSERT INTO orders VALUES (999,1,1,1,1)",
    "CREATE TABLE x (a)", "PRAGMA query_only = 0", "ATTACH DATABASE '/tmp/tandem_sql_attack.db' AS x",
    "SELECT 1; DROP TABLE orders", "DROP TABLE orders; SELECT 1",
])
def test_nothing_can_modify_the_database(suite, attack):
    before = {db: counts(db) for db in SCHEMA_NAMES}
    prices = run_query("shop", "SELECT id, price FROM products")
    e = ex(suite, "t1_count", "shop")
    r = suite.check(e, attack)
    assert r.score == 0.0
    assert {db: counts(db) for db in SCHEMA_NAMES} == before
    assert run_query("shop", "SELECT id, price FROM products") == prices
    assert suite.check(e, e.answer).score == 1.0


def test_check_step_scores_the_query_line(suite):
    e = ex(suite, "t5_none")
    assert suite.check_step(e, [], e.final) == 1.0
    assert suite.check_step(e, [], "SELECT 1") == 0.0
    assert suite.check_step(e, [e.final], e.final) == 0.0
