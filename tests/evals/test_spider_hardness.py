"""Spider hardness rules from SQL text and from Spider's parsed JSON (evals/spider_hardness.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evals.spider_hardness import counts_from_sql, hardness_from_counts, hardness_from_parsed, spider_hardness

SPIDER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "spider" / "dev.json"


@pytest.mark.parametrize(
    ("query", "level"),
    [
        ("SELECT count(*) FROM singer", "easy"),
        ("SELECT name FROM singer WHERE age > 30", "easy"),
        ("SELECT name, country FROM singer WHERE age > 30", "medium"),
        ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id", "easy"),
        ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id WHERE T2.year = 2014", "medium"),
        ("SELECT name FROM singer WHERE age > 30 OR country = 'France'", "medium"),
        ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "medium"),
        ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
        ("SELECT name FROM singer INTERSECT SELECT name FROM actor", "hard"),
        ("SELECT T1.name, count(*) FROM a AS T1 JOIN b AS T2 ON T1.id = T2.aid JOIN c AS T3 ON T2.id = T3.bid "
         "GROUP BY T1.name ORDER BY count(*) DESC LIMIT 3", "extra"),
        ("SELECT name FROM singer WHERE id NOT IN (SELECT singer_id FROM concert) AND age > 20", "extra"),
    ],
)
def test_hand_written_queries(query: str, level: str) -> None:
    assert spider_hardness(query) == level


def test_between_is_one_condition_and_like_counts() -> None:
    c = counts_from_sql("SELECT a FROM t WHERE b BETWEEN 1 AND 5")
    assert (c.component1, c.others) == (1, 0)
    c = counts_from_sql("SELECT a FROM t WHERE b LIKE '%x%'")
    assert c.component1 == 2


def test_decision_rule_reference() -> None:
    def ref(c1: int, c2: int, o: int) -> str:  # the table written out case by case
        if c2 == 0 and c1 <= 1 and o == 0:
            return "easy"
        if c2 == 0 and ((c1 <= 1 and o <= 2) or (c1 <= 2 and o <= 1)):
            return "medium"
        if (c2 == 0 and ((c1 <= 2 and o >= 3) or (c1 == 3 and o <= 2))) or (c2 == 1 and c1 <= 1 and o == 0):
            return "hard"
        return "extra"

    for c1 in range(6):
        for c2 in range(3):
            for o in range(5):
                assert hardness_from_counts(c1, c2, o) == ref(c1, c2, o)


@pytest.mark.skipif(not SPIDER.exists(), reason="shared Spider data not present")
def test_text_parser_agrees_with_spiders_parsed_json() -> None:
    rows = json.loads(SPIDER.read_text())
    agree = sum(spider_hardness(r["query"]) == hardness_from_parsed(r["sql"]) for r in rows)
    assert agree / len(rows) >= 0.99
    # Spider's published dev-set hardness distribution
    assert Counter(hardness_from_parsed(r["sql"]) for r in rows) == {"easy": 248, "medium": 446, "hard": 174,
                                                                      "extra": 166}
