"""Text-to-SQL over three fixed SQLite databases, scored by executing the predicted and the gold query.

Prompts name the database and ask a templated question (``db shop: how many orders of customer Ann?``); the
reference answer is the gold query on one line. Complexity tiers: 1 one table (counts, aggregates, top-k, sorted
lists), 2 filters (comparisons, BETWEEN, LIKE, AND), 3 joins through the bridge table, 4 GROUP BY / HAVING,
5 nesting (subqueries with IN / NOT IN / scalar aggregates). Thresholds and names are drawn from the data, so
gold results are (almost always) non-empty.

The checker takes the first non-empty line of the output (an optional ``answer:`` prefix and trailing ``;`` are
dropped), runs it through :func:`evals.suites.sql_schemas.run_query` (read-only, timeout, row limit) and compares
the rows with the gold rows: as multisets, or as lists when the gold query has ORDER BY; numbers compare after
rounding to 6 decimals, column names are ignored. SQL has no steps: ``step_scores`` is ``None`` and
:meth:`SqlSuite.check_step` scores the query line itself (first line only) by execution.

What it leaves out: partial credit, NULL handling subtleties, and questions beyond these templates.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from evals.suites.base import CheckResult, Example, Suite, safe_check
from evals.suites.sql_schemas import SCHEMA_NAMES, SCHEMAS, QueryError, Schema, Table, run_query

AGGS = (("MAX", "highest"), ("MIN", "lowest"), ("AVG", "average"), ("SUM", "total"))
CATEGORIES = {1: "single_table", 2: "filter", 3: "join", 4: "group", 5: "nested"}
MAX_CHARS = 300

Template = Callable[[random.Random, Schema], tuple[str, str]]


def _entity(rng: random.Random, s: Schema) -> Table:
    return s.a if rng.random() < 0.5 else s.b


def _below_max(rng: random.Random, values: list) -> int:
    return rng.choice(sorted(set(values))[:-1])


def _above_min(rng: random.Random, values: list) -> int:
    return rng.choice(sorted(set(values))[1:])


# ---- tier 1: one table -------------------------------------------------------------------------------------------
def t1_count(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s) if rng.random() < 0.7 else s.bridge
    return f"how many {t.plural}?", f"SELECT COUNT(*) FROM {t.name}"


def t1_list(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice((t.label, *t.cats, *t.nums))
    return f"list the {col} of every {t.sing}", f"SELECT {col} FROM {t.name}"


def t1_distinct(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.cats)
    return f"distinct {col} values of {t.plural}", f"SELECT DISTINCT {col} FROM {t.name}"


def t1_agg(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s) if rng.random() < 0.7 else s.bridge
    fn, word = rng.choice(AGGS)
    col = rng.choice(t.nums)
    return f"{word} {col} of {t.plural}", f"SELECT {fn}({col}) FROM {t.name}"


def t1_top(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.nums)
    k = rng.randint(1, min(10, len(s.rows[t.name]) - 1))
    top = rng.random() < 0.5
    word, order = ("top", "DESC") if top else ("bottom", "ASC")
    return f"{word} {k} {t.plural} by {col}", f"SELECT {t.label} FROM {t.name} ORDER BY {col} {order} LIMIT {k}"


def t1_sorted(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.nums)
    desc = rng.random() < 0.5
    return (f"{t.plural} sorted by {col}{' descending' if desc else ''}",
            f"SELECT {t.label} FROM {t.name} ORDER BY {col}{' DESC' if desc else ''}")


# ---- tier 2: filters ---------------------------------------------------------------------------------------------
def t2_compare(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.nums)
    values = s.column_values(t.name, col)
    if rng.random() < 0.5:
        v = _below_max(rng, values)
        return f"{t.plural} with {col} over {v}", f"SELECT {t.label} FROM {t.name} WHERE {col} > {v}"
    v = _above_min(rng, values)
    return f"{t.plural} with {col} under {v}", f"SELECT {t.label} FROM {t.name} WHERE {col} < {v}"


def t2_count_cat(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.cats)
    v = rng.choice(s.column_values(t.name, col))
    return f"how many {t.plural} with {col} {v}?", f"SELECT COUNT(*) FROM {t.name} WHERE {col} = '{v}'"


def t2_and(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    cat, num = rng.choice(t.cats), rng.choice(t.nums)
    i = rng.randrange(len(s.rows[t.name]))
    v = s.column_values(t.name, cat)[i]
    n = s.column_values(t.name, num)[i] - rng.randint(1, 20)  # row i qualifies
    return (f"{t.plural} with {cat} {v} and {num} over {n}",
            f"SELECT {t.label} FROM {t.name} WHERE {cat} = '{v}' AND {num} > {n}")


def t2_between(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.nums)
    lo, hi = sorted(rng.sample(s.column_values(t.name, col), 2))
    return (f"{t.plural} with {col} from {lo} to {hi}",
            f"SELECT {t.label} FROM {t.name} WHERE {col} BETWEEN {lo} AND {hi}")


def t2_like(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    letter = rng.choice(s.column_values(t.name, t.label))[0]
    return (f"{t.plural} whose {t.label} starts with {letter}",
            f"SELECT {t.label} FROM {t.name} WHERE {t.label} LIKE '{letter}%'")


# ---- tier 3: joins -----------------------------------------------------------------------------------------------
def _sides(rng: random.Random, s: Schema) -> tuple[Table, str, Table, str]:
    """(this entity, its fk in the bridge, the other entity, its fk), in random orientation."""
    br = s.bridge
    if rng.random() < 0.5:
        return s.a, br.fk_a, s.b, br.fk_b
    return s.b, br.fk_b, s.a, br.fk_a


def _used_label(rng: random.Random, s: Schema, t: Table, fk: str) -> str:
    return s.label_of(t.name, rng.choice(s.column_values(s.bridge.name, fk)))


def _join(s: Schema, t: Table, fk: str) -> str:
    br = s.bridge
    return f"{br.name} {br.alias} JOIN {t.name} {t.alias} ON {br.alias}.{fk}={t.alias}.id"


def t3_count(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    x = rng.choice(s.column_values(t.name, t.label))
    return (f"how many {s.bridge.plural} of {t.sing} {x}?",
            f"SELECT COUNT(*) FROM {_join(s, t, fk)} WHERE {t.alias}.{t.label} = '{x}'")


def t3_other(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, o, ofk = _sides(rng, s)
    x = _used_label(rng, s, t, fk)
    return (f"{o.plural} of {t.sing} {x}",
            f"SELECT DISTINCT {o.alias}.{o.label} FROM {_join(s, t, fk)} JOIN {o.name} {o.alias} "
            f"ON {s.bridge.alias}.{ofk}={o.alias}.id WHERE {t.alias}.{t.label} = '{x}'")


def t3_sum(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    x = _used_label(rng, s, t, fk)
    col = rng.choice(s.bridge.nums)
    return (f"total {col} of {s.bridge.plural} of {t.sing} {x}",
            f"SELECT SUM({s.bridge.alias}.{col}) FROM {_join(s, t, fk)} WHERE {t.alias}.{t.label} = '{x}'")


def t3_count_cat(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    cat = rng.choice(t.cats)
    v = rng.choice(s.column_values(t.name, cat))
    return (f"how many {s.bridge.plural} of {t.plural} with {cat} {v}?",
            f"SELECT COUNT(*) FROM {_join(s, t, fk)} WHERE {t.alias}.{cat} = '{v}'")


# ---- tier 4: grouping --------------------------------------------------------------------------------------------
def t4_per_entity(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    lab = f"{t.alias}.{t.label}"
    if rng.random() < 0.5:
        return (f"number of {s.bridge.plural} per {t.sing}",
                f"SELECT {lab}, COUNT(*) FROM {_join(s, t, fk)} GROUP BY {lab}")
    col = rng.choice(s.bridge.nums)
    return (f"total {col} of {s.bridge.plural} per {t.sing}",
            f"SELECT {lab}, SUM({s.bridge.alias}.{col}) FROM {_join(s, t, fk)} GROUP BY {lab}")


def t4_having(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    counts = Counter(s.column_values(s.bridge.name, fk))
    k = rng.randint(0, max(counts.values()) - 1)
    lab = f"{t.alias}.{t.label}"
    return (f"{t.plural} with more than {k} {s.bridge.plural}",
            f"SELECT {lab} FROM {_join(s, t, fk)} GROUP BY {lab} HAVING COUNT(*) > {k}")


def t4_having_sum(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    col = rng.choice(s.bridge.nums)
    sums: Counter = Counter()
    for key, value in zip(s.column_values(s.bridge.name, fk), s.column_values(s.bridge.name, col), strict=True):
        sums[key] += value
    v = _below_max(rng, list(sums.values()))
    lab = f"{t.alias}.{t.label}"
    return (f"{t.plural} with total {col} of {s.bridge.plural} over {v}",
            f"SELECT {lab} FROM {_join(s, t, fk)} GROUP BY {lab} HAVING SUM({s.bridge.alias}.{col}) > {v}")


def t4_per_cat(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    cat = rng.choice(t.cats)
    if rng.random() < 0.5:
        return f"number of {t.plural} per {cat}", f"SELECT {cat}, COUNT(*) FROM {t.name} GROUP BY {cat}"
    fn, word = rng.choice(AGGS)
    col = rng.choice(t.nums)
    return f"{word} {col} of {t.plural} per {cat}", f"SELECT {cat}, {fn}({col}) FROM {t.name} GROUP BY {cat}"


def t4_cat_having(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    cat = rng.choice(t.cats)
    counts = Counter(s.column_values(t.name, cat))
    k = rng.randint(0, max(counts.values()) - 1)
    return (f"{cat} values with more than {k} {t.plural}",
            f"SELECT {cat} FROM {t.name} GROUP BY {cat} HAVING COUNT(*) > {k}")


# ---- tier 5: nesting ---------------------------------------------------------------------------------------------
def t5_vs_avg(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.nums)
    word, op = ("above", ">") if rng.random() < 0.5 else ("below", "<")
    if rng.random() < 0.5:
        return (f"{t.plural} with {col} {word} average",
                f"SELECT {t.label} FROM {t.name} WHERE {col} {op} (SELECT AVG({col}) FROM {t.name})")
    cat = rng.choice(t.cats)
    v = rng.choice(s.column_values(t.name, cat))
    return (f"{t.plural} with {col} {word} the average of {cat} {v}",
            f"SELECT {t.label} FROM {t.name} WHERE {col} {op} (SELECT AVG({col}) FROM {t.name} WHERE {cat} = '{v}')")


def t5_extreme(rng: random.Random, s: Schema) -> tuple[str, str]:
    t = _entity(rng, s)
    col = rng.choice(t.nums)
    word, fn = ("highest", "MAX") if rng.random() < 0.5 else ("lowest", "MIN")
    return (f"{t.sing} with the {word} {col}",
            f"SELECT {t.label} FROM {t.name} WHERE {col} = (SELECT {fn}({col}) FROM {t.name})")


def t5_none(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    return (f"{t.plural} with no {s.bridge.plural}",
            f"SELECT {t.label} FROM {t.name} WHERE id NOT IN (SELECT {fk} FROM {s.bridge.name})")


def t5_in(rng: random.Random, s: Schema) -> tuple[str, str]:
    t, fk, _, _ = _sides(rng, s)
    col = rng.choice(s.bridge.nums)
    v = _below_max(rng, s.column_values(s.bridge.name, col))
    article = "an" if s.bridge.sing[0] in "aeiou" else "a"
    return (f"{t.plural} with {article} {s.bridge.sing} of {col} over {v}",
            f"SELECT {t.label} FROM {t.name} WHERE id IN (SELECT {fk} FROM {s.bridge.name} WHERE {col} > {v})")


TEMPLATES: dict[int, tuple[Template, ...]] = {
    1: (t1_count, t1_list, t1_distinct, t1_agg, t1_top, t1_sorted),
    2: (t2_compare, t2_count_cat, t2_and, t2_between, t2_like),
    3: (t3_count, t3_other, t3_sum, t3_count_cat),
    4: (t4_per_entity, t4_having, t4_having_sum, t4_per_cat, t4_cat_having),
    5: (t5_vs_avg, t5_extreme, t5_none, t5_in),
}


# ---- scoring -----------------------------------------------------------------------------------------------------
def _norm_value(v: object) -> object:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return round(float(v), 6)
    return v


def normalize_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(_norm_value(v) for v in row) for row in rows]


def rows_match(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    """Whether two results are equal: as lists when ``ordered``, else as multisets; numbers rounded."""
    g, p = normalize_rows(gold), normalize_rows(pred)
    if ordered:
        return g == p
    return Counter(g) == Counter(p)


@lru_cache(maxsize=4096)
def _gold_rows(db: str, sql: str) -> tuple[tuple, ...]:
    return tuple(run_query(db, sql, timeout_s=5.0))


def extract_query(output: object) -> str:
    """The predicted query: first non-empty line, ``answer:`` prefix and trailing ``;`` removed."""
    if not isinstance(output, str):
        return ""
    for raw in output[:4000].split("\n"):
        line = raw.strip()
        if line:
            if line.lower().startswith("answer:"):
                line = line[len("answer:"):].strip()
            return line.rstrip(";").strip()
    return ""


class SqlSuite(Suite):
    """Templated text-to-SQL questions over shop / school / flights; execution-based checker."""

    name = "sql"
    timeout_s: float = 1.0
    max_rows: int = 1000

    def generate(self, rng: random.Random) -> Example:
        while True:
            db = rng.choice(SCHEMA_NAMES)
            tier = rng.randint(1, 5)
            template = rng.choice(TEMPLATES[tier])
            question, sql = template(rng, SCHEMAS[db])
            prompt = f"db {db}: {question}"
            if len(prompt) + len(sql) <= MAX_CHARS:
                meta = {"tier": tier, "difficulty": tier, "category": CATEGORIES[tier], "db": db,
                        "template": template.__name__}
                return Example(id="", suite=self.name, prompt=prompt, answer=sql, final=sql, steps=(), meta=meta)

    def check(self, example: Example, output: str) -> CheckResult:
        def run() -> CheckResult:
            query = extract_query(output)
            if not query:
                return CheckResult(0.0, None, "malformed: empty")
            db = example.meta["db"]
            gold = list(_gold_rows(db, example.final))
            try:
                pred = run_query(db, query, timeout_s=self.timeout_s, max_rows=self.max_rows)
            except QueryError as exc:
                return CheckResult(0.0, None, str(exc)[:200])
            ordered = "ORDER BY" in example.final.upper()
            if rows_match(gold, pred, ordered):
                return CheckResult(1.0, None, "ok")
            return CheckResult(0.0, None, "wrong result")

        return safe_check(run, None)

    def check_step(self, example: Example, prefix_steps: list[str], step: str) -> float:
        """SQL has no steps: the single 'step' is the query line, scored by execution; later lines score 0."""
        if prefix_steps:
            return 0.0
        return self.check(example, step).score
