"""Dataset adapters on the real shared data: Spider dev executed on its SQLite files, GSM8K exact numbers, zoo
suites; and the pure helpers (number / SQL extraction, result-set comparison, hardness)."""

from __future__ import annotations

import pytest

from evals import datasets as ds


def test_extract_number_and_equality():
    assert ds.extract_number("so 3 + 4 = 7\nanswer: 1,234.") == "1,234"
    assert ds.extract_number("blah #### $18") == "$18"
    assert ds.extract_number("first 3 then 12 and finally 42.") == "42"
    assert ds.extract_number("no digits") is None
    assert ds.numbers_equal("18.00", "18") and ds.numbers_equal("$1,234", "1234")
    assert not ds.numbers_equal("18.5", "18") and not ds.numbers_equal(None, "1")


def test_extract_sql():
    assert ds.extract_sql("Here:\n```sql\nSELECT a FROM t;\n```\nthanks") == "SELECT a FROM t"
    assert ds.extract_sql("answer: select count(*) from singer; select 1") == "select count(*) from singer"
    assert ds.extract_sql("I think WITH x AS (SELECT 1) SELECT * FROM x") == "WITH x AS (SELECT 1) SELECT * FROM x"


def test_results_equal():
    assert ds.results_equal([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=False)
    assert not ds.results_equal([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=True)
    assert not ds.results_equal([(1,), (1,)], [(1,)], ordered=False)  # multisets, not sets
    assert ds.results_equal([(2.0,)], [(2,)], ordered=True)


def test_spider_hardness_levels():
    assert ds.spider_hardness("SELECT count(*) FROM singer") == "easy"
    assert ds.spider_hardness("SELECT name, country, age FROM singer ORDER BY age DESC") == "medium"
    assert ds.spider_hardness("SELECT name FROM a WHERE x = 1 INTERSECT SELECT name FROM a WHERE y = 2") in (
        "hard", "extra")
    assert ds.spider_hardness("SELECT T1.a, count(*) FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T2.x > "
                              "(SELECT avg(x) FROM b) GROUP BY T1.a ORDER BY count(*) DESC LIMIT 1") == "extra"


def test_spider_executes_gold_and_rejects_wrong(tmp_path):
    sp = ds.get_dataset("spider")
    items = sp.items("dev", 40)
    assert len(items) == 40 and all(it.meta["db_id"] and "CREATE TABLE" in it.prompt for it in items)
    assert {it.category for it in items} <= {"easy", "medium", "hard", "extra"}
    assert all(sp.check(it, f"```sql\n{it.answer}\n```") == 1.0 for it in items)
    first = items[0]  # SELECT count(*) FROM singer
    assert sp.check(first, "SELECT count(*) + 1 FROM singer") == 0.0
    assert sp.check(first, "SELEC nonsense") == 0.0
    assert sp.check(first, "DELETE FROM singer") == 0.0  # read-only: refused, and the data is intact
    assert sp.check(first, first.answer) == 1.0
    # a query that never ends is cut by the time limit
    slow = ds.Spider(timeout_s=0.2)
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    assert slow.check(first, endless) == 0.0


def test_gsm8k_items_and_check():
    g = ds.get_dataset("gsm8k")
    items = g.items("test", 25)
    assert len(items) == 25 and items[0].answer == "18"
    assert all(it.category in ("1-2 steps", "3-4 steps", "5+ steps") for it in items)
    assert all(g.check(it, f"work...\nanswer: {it.answer}") == 1.0 for it in items)
    assert g.check(items[0], "answer: 19") == 0.0
    with pytest.raises(ValueError):
        g.items("train", 1)


def test_zoo_suite_adapter():
    z = ds.get_dataset("arithmetic")
    items = z.items("test", 5)
    assert [it.id for it in items] == [e.id for e in z.suite.examples("test", 5)]
    assert all(ds.check(it, f"answer: {it.answer}") == 1.0 for it in items)
    assert ds.check(items[0], "answer: -1") == 0.0
    fresh = ds.ZooSuite("arithmetic")  # an item rebuilt elsewhere is found by regenerating its split
    assert fresh.check(items[3], f"answer: {items[3].answer}") == 1.0


def test_shared_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TANDEM_SHARED_DATA", str(tmp_path))
    assert ds.shared_data_dir() == tmp_path
    monkeypatch.delenv("TANDEM_SHARED_DATA")
    assert (ds.shared_data_dir() / "spider" / "dev.json").exists()
