"""Three small fixed SQLite databases (shop, school, flights), generated from a fixed seed, and a guarded executor.

Each schema has two entity tables joined by one bridge table (orders, enrollments, flights). Entity tables have a
unique text label column (``name``/``title``/``code``), categorical text columns, and numeric columns whose values
are distinct within the table (so ``ORDER BY ... LIMIT k`` has no ties). Rows are generated deterministically; a
few entities have no bridge rows (so "with no orders" questions have answers).

:func:`run_query` executes one statement on a per-thread in-memory copy of a database that cannot be changed: an
authorizer allows only reads (SELECT, column reads, functions, recursive CTEs; no writes, DDL, PRAGMA or ATTACH),
``PRAGMA query_only`` is on, the value length is capped, a progress handler interrupts a query after a deadline, and
at most ``max_rows + 1`` rows are fetched.

What it leaves out: question templates and scoring (``evals.suites.sql``), NULLs, dates, and many-column schemas.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    alias: str
    sing: str  # question word for one row ("customer")
    plural: str  # question word for rows ("customers")
    label: str  # unique text column naming a row
    cats: tuple[str, ...]  # categorical text columns
    nums: tuple[str, ...]  # numeric columns, distinct within the table


@dataclass(frozen=True)
class Bridge:
    name: str
    alias: str
    sing: str
    plural: str
    fk_a: str  # column referencing a.id
    a: str
    fk_b: str  # column referencing b.id
    b: str
    nums: tuple[str, ...]  # numeric columns (not necessarily distinct)


@dataclass(frozen=True)
class Schema:
    name: str
    a: Table
    b: Table
    bridge: Bridge
    rows: dict[str, list[tuple]]  # table -> rows, columns in ``columns(table)`` order

    def table(self, name: str) -> Table:
        return self.a if name == self.a.name else self.b

    def columns(self, name: str) -> tuple[str, ...]:
        if name == self.bridge.name:
            return ("id", self.bridge.fk_a, self.bridge.fk_b, *self.bridge.nums)
        t = self.table(name)
        return ("id", t.label, *t.cats, *t.nums)

    def column_values(self, table: str, column: str) -> list:
        i = self.columns(table).index(column)
        return [row[i] for row in self.rows[table]]

    def label_of(self, table: str, row_id: int) -> str:
        t = self.table(table)
        return self.column_values(table, t.label)[row_id - 1]


NAMES = ("Ann", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jo", "Kim", "Lu", "Max", "Ned", "Ola", "Pam",
         "Raj", "Sam", "Tia", "Uma", "Vic", "Wes", "Xia", "Yan", "Zoe", "Abe", "Bea", "Cal", "Dot", "Eve", "Flo")
PRODUCTS = ("lamp", "desk", "chair", "mug", "pen", "book", "sofa", "rug", "fan", "clock", "vase", "bed", "shelf",
            "tent", "kite", "drum", "bell", "cap", "sock", "boot", "coat", "hat", "ring", "bag")
COURSES = ("math", "art", "music", "law", "logic", "latin", "drama", "chess", "poetry", "optics", "botany",
           "ethics")
AIRLINES = ("Acme", "Blue", "Crest", "Delta", "Echo", "Fjord", "Gale", "Halo")
AIRPORTS = ("LAX", "JFK", "ORD", "SFO", "SEA", "BOS", "MIA", "DEN", "ATL", "DFW", "PHX", "IAD")

SCHEMA_NAMES: tuple[str, ...] = ("shop", "school", "flights")
_SEED = 20240601


def _entity_rows(rng: random.Random, labels: tuple[str, ...], cats: list[tuple[str, ...]],
                 num_ranges: list[tuple[int, int]]) -> list[tuple]:
    nums = [rng.sample(range(lo, hi), len(labels)) for lo, hi in num_ranges]
    return [(i + 1, label, *(rng.choice(c) for c in cats), *(col[i] for col in nums))
            for i, label in enumerate(labels)]


def _bridge_rows(rng: random.Random, n: int, n_a: int, n_b: int, num_ranges: list[tuple[int, int]]) -> list[tuple]:
    # The last two entities on each side never appear, so "with no ..." questions have answers.
    return [(i + 1, rng.randint(1, n_a - 2), rng.randint(1, n_b - 2), *(rng.randint(lo, hi) for lo, hi in num_ranges))
            for i in range(n)]


def _build_schemas() -> dict[str, Schema]:
    rng = random.Random(_SEED)
    cities = ("Paris", "Rome", "Oslo", "Lima", "Kyiv", "Doha")
    customers = Table("customers", "c", "customer", "customers", "name", ("city",), ("age",))
    products = Table("products", "p", "product", "products", "name", ("cat",), ("price", "stock"))
    orders = Bridge("orders", "o", "order", "orders", "cid", "customers", "pid", "products", ("qty", "day"))
    shop_rows = {
        "customers": _entity_rows(rng, NAMES, [cities], [(18, 80)]),
        "products": _entity_rows(rng, PRODUCTS, [("home", "toys", "wear", "office", "sport")], [(3, 300), (0, 500)]),
        "orders": _bridge_rows(rng, 80, len(NAMES), len(PRODUCTS), [(1, 9), (1, 30)]),
    }
    students = Table("students", "s", "student", "students", "name", ("major", "town"), ("score",))
    courses = Table("courses", "c", "course", "courses", "title", ("dept",), ("hours", "fee"))
    enrollments = Bridge("enrollments", "e", "enrollment", "enrollments", "sid", "students", "crs", "courses",
                         ("grade",))
    school_rows = {
        "students": _entity_rows(rng, NAMES[::-1], [("cs", "bio", "art", "econ"), cities[:4]], [(40, 100)]),
        "courses": _entity_rows(rng, COURSES, [("sci", "arts", "hum")], [(10, 60), (100, 900)]),
        "enrollments": _bridge_rows(rng, 70, len(NAMES), len(COURSES), [(0, 100)]),
    }
    airlines = Table("airlines", "a", "airline", "airlines", "name", ("country",), ("fleet",))
    airports = Table("airports", "p", "airport", "airports", "code", ("city",), ("gates",))
    flights = Bridge("flights", "f", "flight", "flights", "aid", "airlines", "src", "airports", ("dist", "price"))
    flight_rows = {
        "airlines": _entity_rows(rng, AIRLINES, [("US", "UK", "FR")], [(5, 300)]),
        "airports": _entity_rows(rng, AIRPORTS, [("west", "east", "south")], [(2, 120)]),
        "flights": _bridge_rows(rng, 60, len(AIRLINES), len(AIRPORTS), [(100, 5000), (50, 900)]),
    }
    return {
        "shop": Schema("shop", customers, products, orders, shop_rows),
        "school": Schema("school", students, courses, enrollments, school_rows),
        "flights": Schema("flights", airlines, airports, flights, flight_rows),
    }


SCHEMAS: dict[str, Schema] = _build_schemas()


def ddl(schema: Schema) -> list[str]:
    """CREATE TABLE statements for a schema."""
    out = []
    for t in (schema.a, schema.b):
        cols = ["id INTEGER PRIMARY KEY", f"{t.label} TEXT", *(f"{c} TEXT" for c in t.cats),
                *(f"{c} INTEGER" for c in t.nums)]
        out.append(f"CREATE TABLE {t.name} ({', '.join(cols)})")
    br = schema.bridge
    cols = ["id INTEGER PRIMARY KEY", f"{br.fk_a} INTEGER REFERENCES {br.a}(id)",
            f"{br.fk_b} INTEGER REFERENCES {br.b}(id)", *(f"{c} INTEGER" for c in br.nums)]
    out.append(f"CREATE TABLE {br.name} ({', '.join(cols)})")
    return out


_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
# Functions that can allocate huge values inside one call (which a progress handler cannot interrupt).
_DENIED_FUNCTIONS = {"load_extension", "randomblob", "zeroblob", "readfile", "writefile", "printf", "format"}
MAX_VALUE_BYTES = 100_000


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def open_database(name: str) -> sqlite3.Connection:
    """A new in-memory connection holding schema ``name`` with its rows, locked to reads."""
    schema = SCHEMAS[name]
    conn = sqlite3.connect(":memory:")
    for stmt in ddl(schema):
        conn.execute(stmt)
    for table, rows in schema.rows.items():
        marks = ",".join("?" * len(schema.columns(table)))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    conn.commit()
    conn.execute("PRAGMA query_only = 1")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_VALUE_BYTES)
    conn.set_authorizer(_authorize)
    return conn


_local = threading.local()


def connection(name: str) -> sqlite3.Connection:
    """This thread's read-only connection to schema ``name`` (created on first use)."""
    conns: dict[str, sqlite3.Connection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    if name not in conns:
        conns[name] = open_database(name)
    return conns[name]


class QueryError(Exception):
    """A query failed: SQL error, not a query, timed out, or too many rows."""


def run_query(db: str, sql: str, *, timeout_s: float = 1.0, max_rows: int = 1000) -> list[tuple]:
    """Execute one read-only statement on database ``db``; return its rows or raise :class:`QueryError`."""
    conn = connection(db)
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        cur = conn.execute(sql)
        if cur.description is None:
            raise QueryError("not a query")
        rows = cur.fetchmany(max_rows + 1)
        cur.close()
    except QueryError:
        raise
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryError("timeout") from exc
        raise QueryError(f"sql error: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of a predicted query is a QueryError
        raise QueryError(f"sql error: {exc}") from exc
    finally:
        conn.set_progress_handler(None, 0)
        if conn.in_transaction:
            conn.rollback()
    if len(rows) > max_rows:
        raise QueryError("too many rows")
    return rows
