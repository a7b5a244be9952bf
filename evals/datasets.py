"""Eval datasets behind one small interface: ``items(split, n) -> list[Item]`` and ``check(item, output) -> score``.

Adapters:
- ``spider`` — Spider dev (``<shared data>/spider``): question + the database schema → one SQLite query. The output's
  query runs on ``database/<db_id>/<db_id>.sqlite`` opened read-only with a time limit; score 1 when its result set
  equals the gold query's (as a multiset of rows; as a list when the gold query has ORDER BY). Category: Spider
  hardness (easy / medium / hard / extra) from the gold SQL by the usual counting rules, approximated with regular
  expressions rather than Spider's SQL parser.
- ``gsm8k`` — GSM8K test (``<shared data>/gsm8k/test.jsonl``): exact final number (``answer: X`` line, else
  ``#### X``, else the last number in the output). Category: the number of calculation steps of the gold solution.
- every zoo suite of ``evals.suites`` (``arithmetic``, ``sql``, ``units``) under its own name; its checker scores.

The shared data folder is ``$TANDEM_SHARED_DATA`` or ``<repo>/../shared/data``. ``get_dataset(name)`` returns an
adapter; ``check(item, output)`` dispatches on ``item.suite``.

What it leaves out: model calls (``evals.live``), few-shot prompting, Spider's official parser-based hardness and
its column-permutation matching, and GSM8K train.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Dataset",
    "GSM8K",
    "Item",
    "Spider",
    "ZooSuite",
    "check",
    "dataset_names",
    "extract_number",
    "extract_sql",
    "get_dataset",
    "numbers_equal",
    "results_equal",
    "run_sql",
    "shared_data_dir",
    "spider_hardness",
]


@dataclass(frozen=True)
class Item:
    """One eval question: the user message to send, the reference answer and a category for reports."""

    id: str
    suite: str
    prompt: str
    answer: str
    category: str = "all"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]


class Dataset(Protocol):
    name: str

    def items(self, split: str, n: int | None = None) -> list[Item]: ...

    def check(self, item: Item, output: str) -> float: ...


def shared_data_dir() -> Path:
    """``$TANDEM_SHARED_DATA`` or ``<repo root>/../shared/data``."""
    env = os.environ.get("TANDEM_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------- GSM8K

_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _to_decimal(text: str) -> Decimal | None:
    t = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if t.endswith("%"):
        t = t[:-1]
    try:
        d = Decimal(t)
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def extract_number(output: str) -> str | None:
    """The final number of an output: the ``answer:`` line, else the ``####`` line, else the last number."""
    if not isinstance(output, str):
        return None
    for marker in (r"answer\s*:", r"####"):
        found = re.findall(marker + r"\s*([^\n]*)", output, flags=re.IGNORECASE)
        if found:
            nums = _NUMBER.findall(found[-1])
            if nums:
                return nums[0].replace(" ", "")
    nums = _NUMBER.findall(output)
    return nums[-1].replace(" ", "") if nums else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Exact numeric equality after removing ``,``/``$``/trailing ``.`` (``18`` == ``18.00`` == ``$18``)."""
    if a is None or b is None:
        return False
    da, db = _to_decimal(a), _to_decimal(b)
    return da is not None and db is not None and da == db


class GSM8K:
    """GSM8K test questions; exact final number."""

    name = "gsm8k"
    instruction = "Solve the problem step by step. End with a final line of the form 'answer: <number>'."

    def __init__(self, path: Path | None = None):
        self.path = path or shared_data_dir() / "gsm8k" / "test.jsonl"

    @lru_cache(maxsize=1)  # noqa: B019 - one adapter per process; the file is small
    def _rows(self) -> list[dict[str, Any]]:
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def items(self, split: str = "test", n: int | None = None) -> list[Item]:
        if split != "test":
            raise ValueError(f"gsm8k has only the 'test' split here, not {split!r}")
        out = []
        for i, row in enumerate(self._rows()[: n if n is not None else None]):
            gold = row["answer"].split("####")[-1].strip()
            steps = row["answer"].count("<<")
            category = "1-2 steps" if steps <= 2 else "3-4 steps" if steps <= 4 else "5+ steps"
            out.append(Item(id=f"gsm8k/test/{i:05d}", suite=self.name, prompt=f"{row['question']}\n\n{self.instruction}",
                            answer=gold, category=category, meta={"steps": steps}))
        return out

    def check(self, item: Item, output: str) -> float:
        return 1.0 if numbers_equal(extract_number(output), item.answer) else 0.0


# ------------------------------------------------------------------------------------------------- Spider

_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_sql(output: str) -> str:
    """The query in an output: a fenced block if any, else the text from the first SELECT/WITH; one statement."""
    if not isinstance(output, str):
        return ""
    m = _FENCE.search(output)
    text = m.group(1) if m else output
    text = re.sub(r"^\s*answer\s*:\s*", "", text, flags=re.IGNORECASE)
    start = re.search(r"\b(SELECT|WITH)\b", text, flags=re.IGNORECASE)
    if start:
        text = text[start.start():]
    return text.split(";")[0].strip()


def run_sql(db_path: Path, sql: str, timeout_s: float = 5.0, max_rows: int = 100_000) -> list[tuple] | None:
    """Rows of ``sql`` on a read-only database, or None on any error, a timeout or more than ``max_rows`` rows."""
    if not sql.strip():
        return None
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1.0, check_same_thread=False)
    except sqlite3.Error:
        return None
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(max_rows + 1)
        if len(rows) > max_rows:
            return None
        return [tuple(r) for r in rows]
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
        return None
    finally:
        conn.close()


def _norm_value(v: Any) -> Any:
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v):
            return int(v)
        return round(v, 6)
    return v


def results_equal(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    """Result sets equal: as lists when ``ordered``, else as multisets of rows (floats compared to 6 places)."""
    g = [tuple(_norm_value(v) for v in r) for r in gold]
    p = [tuple(_norm_value(v) for v in r) for r in pred]
    return g == p if ordered else Counter(g) == Counter(p)


_AGG = re.compile(r"\b(count|sum|avg|min|max)\s*\(", re.IGNORECASE)


def _top_level_select_columns(sql: str) -> int:
    m = re.search(r"\bselect\b(.*?)\bfrom\b", sql, flags=re.IGNORECASE | re.DOTALL)
    if not m:
        return 1
    depth, cols = 0, 1
    for ch in m.group(1):
        depth += ch == "("
        depth -= ch == ")"
        cols += ch == "," and depth == 0
    return cols


def spider_hardness(sql: str) -> str:
    """Spider's hardness level of a gold query (easy / medium / hard / extra), counting components by regex."""
    s = " " + re.sub(r"'[^']*'|\"[^\"]*\"", "''", sql).lower() + " "
    comp1 = sum(1 for kw in (" where ", " group by ", " order by ", " limit ") if kw in s)
    comp1 += s.count(" join ") + s.count(" or ") + s.count(" like ")
    comp2 = s.count(" except ") + s.count(" union ") + s.count(" intersect ") + max(s.count("select") - 1, 0)
    where = re.search(r"\bwhere\b(.*?)(\bgroup by\b|\border by\b|\blimit\b|$)", s, flags=re.DOTALL)
    where_conds = 1 + len(re.findall(r"\b(and|or)\b", where.group(1))) if where else 0
    group = re.search(r"\bgroup by\b(.*?)(\bhaving\b|\border by\b|\blimit\b|$)", s, flags=re.DOTALL)
    group_cols = group.group(1).count(",") + 1 if group else 0
    others = sum([len(_AGG.findall(s)) > 1, _top_level_select_columns(s) > 1, where_conds > 1, group_cols > 1])
    if comp1 <= 1 and others == 0 and comp2 == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and comp2 == 0) or (comp1 <= 2 and others < 2 and comp2 == 0):
        return "medium"
    if ((others > 2 and comp1 <= 2 and comp2 == 0) or (2 < comp1 <= 3 and others <= 2 and comp2 == 0)
            or (comp1 <= 1 and others == 0 and comp2 <= 1)):
        return "hard"
    return "extra"


class Spider:
    """Spider dev: text-to-SQL scored by execution on the dev SQLite databases."""

    name = "spider"
    instruction = "Write one SQLite query that answers the question. Reply with the query only."

    def __init__(self, root: Path | None = None, timeout_s: float = 5.0):
        self.root = root or shared_data_dir() / "spider"
        self.timeout_s = timeout_s
        self._gold: dict[str, list[tuple] | None] = {}

    def db_path(self, db_id: str) -> Path:
        return self.root / "database" / db_id / f"{db_id}.sqlite"

    @lru_cache(maxsize=64)  # noqa: B019
    def schema(self, db_id: str) -> str:
        """The CREATE statements of a database (as stored in it), one per table."""
        conn = sqlite3.connect(f"file:{self.db_path(db_id)}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL "
                                "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
        finally:
            conn.close()
        return "\n".join(re.sub(r"\s+", " ", r[0]).strip() + ";" for r in rows)

    @lru_cache(maxsize=1)  # noqa: B019
    def _rows(self) -> list[dict[str, Any]]:
        with open(self.root / "dev.json", encoding="utf-8") as f:
            return json.load(f)

    def items(self, split: str = "dev", n: int | None = None) -> list[Item]:
        if split not in ("dev", "test"):
            raise ValueError(f"spider has only the 'dev' split here, not {split!r}")
        out = []
        for i, row in enumerate(self._rows()[: n if n is not None else None]):
            db_id, gold = row["db_id"], row["query"]
            prompt = f"Database schema:\n{self.schema(db_id)}\n\nQuestion: {row['question']}\n\n{self.instruction}"
            out.append(Item(id=f"spider/dev/{i:05d}", suite=self.name, prompt=prompt, answer=gold,
                            category=spider_hardness(gold), meta={"db_id": db_id}))
        return out

    def gold_rows(self, item: Item) -> list[tuple] | None:
        if item.id not in self._gold:
            self._gold[item.id] = run_sql(self.db_path(item.meta["db_id"]), item.answer, self.timeout_s)
        return self._gold[item.id]

    def check(self, item: Item, output: str) -> float:
        gold = self.gold_rows(item)
        if gold is None:
            return 0.0
        pred = run_sql(self.db_path(item.meta["db_id"]), extract_sql(output), self.timeout_s)
        if pred is None:
            return 0.0
        ordered = bool(re.search(r"\border\s+by\b", item.answer, flags=re.IGNORECASE))
        return 1.0 if results_equal(gold, pred, ordered) else 0.0


# ------------------------------------------------------------------------------------------------- zoo suites


class ZooSuite:
    """A task suite of ``evals.suites`` (arithmetic, sql, units) seen through the Item interface."""

    def __init__(self, name: str):
        from evals.suites import get_suite

        self.name = name
        self.suite = get_suite(name)
        self._examples: dict[str, Any] = {}

    def items(self, split: str = "test", n: int | None = None) -> list[Item]:
        out = []
        for ex in self.suite.examples(split, n):
            self._examples[ex.id] = ex
            meta = dict(ex.meta)
            out.append(Item(id=ex.id, suite=self.name, prompt=ex.prompt, answer=ex.final,
                            category=str(meta.get("category", "all")), meta=meta))
        return out

    def _example(self, item: Item) -> Any:
        ex = self._examples.get(item.id)
        if ex is None:  # an item rebuilt from a results file: regenerate its split to find it
            split, index = item.id.split("/")[1], int(item.id.split("/")[2])
            self.items(split, index + 1)
            ex = self._examples[item.id]
        return ex

    def check(self, item: Item, output: str) -> float:
        return float(self.suite.check(self._example(item), output).score)


# ------------------------------------------------------------------------------------------------- registry

_CACHE: dict[str, Dataset] = {}


def dataset_names() -> tuple[str, ...]:
    from evals.suites import SUITE_NAMES

    return ("gsm8k", "spider", *SUITE_NAMES)


def get_dataset(name: str) -> Dataset:
    """The adapter called ``name`` (``gsm8k``, ``spider`` or a zoo suite); one instance per process."""
    if name not in _CACHE:
        if name == "gsm8k":
            _CACHE[name] = GSM8K()
        elif name == "spider":
            _CACHE[name] = Spider()
        else:
            _CACHE[name] = ZooSuite(name)
    return _CACHE[name]


def default_split(name: str) -> str:
    return {"gsm8k": "test", "spider": "dev"}.get(name, "test")


def check(item: Item, output: str) -> float:
    """Score ``output`` for ``item`` with the checker of the item's suite; never raises (errors score 0)."""
    try:
        return float(get_dataset(item.suite).check(item, output))
    except Exception:  # noqa: BLE001 - a checker failure is a wrong answer, not a crashed eval
        return 0.0
