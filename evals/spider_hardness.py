"""Spider SQL hardness (easy / medium / hard / extra) by the rules of Spider's official evaluation script.

Spider counts three things in a query and maps them to a level (`hardness_from_counts`):
- component1: WHERE, GROUP BY, ORDER BY, LIMIT present (1 each), joins (tables in FROM − 1), ORs and LIKEs in
  ON / WHERE / HAVING conditions;
- component2: nested queries — subqueries used as condition values, plus INTERSECT / UNION / EXCEPT;
- others: more than one aggregation, more than one SELECT column, more than one WHERE condition, more than one
  GROUP BY column (1 each). As in the official script, aggregations in WHERE / HAVING are counted through the
  condition's NOT flag (its `has_agg` looks at the first element of a condition unit, which is `not_op`).
Two inputs: `hardness_from_parsed(sql)` takes Spider's parsed JSON (`dev.json`'s `sql` field) and follows the script
line by line; `spider_hardness(query)` parses SQL text with a small tokenizer (depth-aware clause split) and
computes the same counts. Both are pure.

Left out: value-level parsing (literals are skipped), schema lookups, dialects beyond SQLite's common subset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

LEVELS = ("easy", "medium", "hard", "extra")
_AGGS = {"max", "min", "count", "sum", "avg"}
_CLAUSES = ("select", "from", "where", "group", "having", "order", "limit")
_SETOPS = {"intersect", "union", "except"}
_TOKEN = re.compile(
    r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|<=|>=|!=|<>|==|[(),;=<>*+\-/]|[A-Za-z_][\w.$]*|\d+(?:\.\d+)?|\S)"""
)


@dataclass(frozen=True)
class HardnessCounts:
    component1: int
    component2: int
    others: int


def hardness_from_counts(c1: int, c2: int, others: int) -> str:
    """Spider's `eval_hardness` decision rule."""
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or (
        c1 <= 1 and others == 0 and c2 <= 1
    ):
        return "hard"
    return "extra"


# ------------------------------------------------------------------------------------ from Spider's parsed JSON

_LIKE_OP = 9  # WHERE_OPS = ('not', 'between', '=', '>', '<', '>=', '<=', '!=', 'in', 'like', 'is', 'exists')


def _nested(sql: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    conds = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    for cu in conds:
        for v in (cu[3], cu[4]):
            if isinstance(v, dict):
                out.append(v)
    for op in ("intersect", "except", "union"):
        if sql.get(op) is not None:
            out.append(sql[op])
    return out


def _count_agg(units: list[Any]) -> int:
    return sum(1 for u in units if u[0] != 0)  # u[0]: agg id for col units, not_op for condition units


def counts_from_parsed(sql: dict[str, Any]) -> HardnessCounts:
    c1 = sum(1 for k in ("where", "groupBy", "orderBy") if len(sql[k]) > 0) + (sql["limit"] is not None)
    if len(sql["from"]["table_units"]) > 0:
        c1 += len(sql["from"]["table_units"]) - 1
    ao = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    c1 += sum(1 for t in ao if t == "or")
    cus = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    c1 += sum(1 for cu in cus if cu[1] == _LIKE_OP)
    c2 = len(_nested(sql))
    agg = _count_agg(sql["select"][1])  # (agg id, val unit) pairs
    agg += _count_agg(sql["where"][::2]) + _count_agg(sql["groupBy"])
    if sql["orderBy"]:
        units = [vu[1] for vu in sql["orderBy"][1] if vu[1]] + [vu[2] for vu in sql["orderBy"][1] if vu[2]]
        agg += _count_agg(units)
    agg += _count_agg(sql["having"])
    others = int(agg > 1) + int(len(sql["select"][1]) > 1) + int(len(sql["where"]) > 1) + int(len(sql["groupBy"]) > 1)
    return HardnessCounts(c1, c2, others)


def hardness_from_parsed(sql: dict[str, Any]) -> str:
    c = counts_from_parsed(sql)
    return hardness_from_counts(c.component1, c.component2, c.others)


# ---------------------------------------------------------------------------------------------- from SQL text


def tokenize(query: str) -> list[str]:
    return [t for t in _TOKEN.findall(query.strip().rstrip(";")) if t != ";"]


def _low(t: str) -> str:
    return t.lower()


def _split_depth0(toks: list[str], seps: set[str]) -> list[list[str]]:
    """Split at depth-0 tokens whose lower form is in `seps` (the separators are dropped)."""
    parts: list[list[str]] = [[]]
    depth = 0
    for t in toks:
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        if depth == 0 and _low(t) in seps:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _has_subquery(toks: list[str]) -> bool:
    return any(t == "(" and i + 1 < len(toks) and _low(toks[i + 1]) == "select" for i, t in enumerate(toks))


def _agg_at_depth0(toks: list[str]) -> bool:
    depth = 0
    for i, t in enumerate(toks):
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        elif depth == 0 and _low(t) in _AGGS and i + 1 < len(toks) and toks[i + 1] == "(":
            return True
    return False


def _conditions(toks: list[str]) -> tuple[list[list[str]], list[str]]:
    """Condition units and the and/or connectors between them (BETWEEN x AND y stays one unit)."""
    units: list[list[str]] = [[]]
    conns: list[str] = []
    depth, between = 0, False
    for t in toks:
        lt = _low(t)
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        if depth == 0 and lt == "between":
            between = True
        if depth == 0 and lt in ("and", "or"):
            if lt == "and" and between:
                between = False
            else:
                conns.append(lt)
                units.append([])
                continue
        units[-1].append(t)
    return [u for u in units if u], conns


def _clauses(toks: list[str]) -> dict[str, list[str]]:
    """Depth-0 clause bodies of one SELECT (no set operation)."""
    out: dict[str, list[str]] = {}
    depth, cur = 0, None
    i = 0
    while i < len(toks):
        t, lt = toks[i], _low(toks[i])
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        if depth == 0 and lt in _CLAUSES:
            cur = lt
            out.setdefault(cur, [])
            if lt in ("group", "order") and i + 1 < len(toks) and _low(toks[i + 1]) == "by":
                i += 1
            i += 1
            continue
        if cur is not None:
            out[cur].append(t)
        i += 1
    return out


def counts_from_sql(query: str) -> HardnessCounts:
    toks = tokenize(query)
    # a depth-0 set operation: the right side (which holds any further set operations) is one nested query
    parts = _split_depth0(toks, _SETOPS)
    main, n_setops = parts[0], int(len(parts) > 1)
    cl = _clauses(main)
    select = [t for t in cl.get("select", []) if _low(t) != "distinct"]
    sel_items = [p for p in _split_depth0(select, {","}) if p]
    frm = cl.get("from", [])
    on_toks: list[str] = []
    tables = 0
    if frm:
        on_parts = _split_depth0(frm, {"on"})
        table_part = on_parts[0] + [x for p in on_parts[1:] for x in p]
        # tables = 1 + joins + commas at depth 0 (ON bodies are joined back in: their JOINs still count)
        tables = 1 + sum(1 for x in _split_depth0(table_part, {"join", ","})[1:])
        on_toks = [x for p in on_parts[1:] for x in (_split_depth0(p, {"join"})[0] + ["and"])][:-1]
    on_units, on_conns = _conditions(on_toks) if on_toks else ([], [])
    where_units, where_conns = _conditions(cl["where"]) if cl.get("where") else ([], [])
    hav_units, hav_conns = _conditions(cl["having"]) if cl.get("having") else ([], [])
    group = [p for p in _split_depth0(cl.get("group", []), {","}) if p]
    order_body = [t for t in cl.get("order", []) if _low(t) not in ("asc", "desc")]
    order = [p for p in _split_depth0(order_body, {","}) if p]
    c1 = int(bool(where_units)) + int(bool(group)) + int(bool(order)) + int("limit" in cl) + max(tables - 1, 0)
    c1 += sum(1 for c in on_conns + where_conns + hav_conns if c == "or")
    all_units = on_units + where_units + hav_units
    c1 += sum(1 for u in all_units if any(_low(t) == "like" for t in u))
    c2 = n_setops + sum(1 for u in all_units if _has_subquery(u))
    agg = sum(1 for it in sel_items if _agg_at_depth0(it))
    agg += sum(1 for u in where_units + hav_units if any(_low(t) == "not" for t in u))
    agg += sum(1 for it in order if _agg_at_depth0(it))
    n_where = len(where_units) * 2 - 1 if where_units else 0  # Spider's list holds units and connectors
    others = int(agg > 1) + int(len(sel_items) > 1) + int(n_where > 1) + int(len(group) > 1)
    return HardnessCounts(c1, c2, others)


def spider_hardness(query: str) -> str:
    """Spider hardness level of a SQL query string."""
    c = counts_from_sql(query)
    return hardness_from_counts(c.component1, c.component2, c.others)
