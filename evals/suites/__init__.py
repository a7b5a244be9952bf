"""Task suites with automatic checkers: arithmetic word problems, text-to-SQL on SQLite, unit conversion.

``get_suite(name)`` returns a suite; every suite has deterministic train / validation / test splits (disjoint by
prompt) and a checker that never raises. What it leaves out: model calls and training (``evals.zoo``).
"""

from __future__ import annotations

from evals.suites.base import CheckResult, Example, Suite, split_of

SUITE_NAMES: tuple[str, ...] = ("arithmetic", "sql", "units", "english", "english-steps")


def get_suite(name: str) -> Suite:
    """The suite called ``name`` (one of ``SUITE_NAMES``)."""
    if name == "arithmetic":
        from evals.suites.arithmetic import ArithmeticSuite

        return ArithmeticSuite()
    if name == "sql":
        from evals.suites.sql import SqlSuite

        return SqlSuite()
    if name == "units":
        from evals.suites.units import UnitsSuite

        return UnitsSuite()
    if name == "english":
        from evals.suites.english import EnglishSuite

        return EnglishSuite()
    if name == "english-steps":
        from evals.suites.english_steps import EnglishStepsSuite

        return EnglishStepsSuite()
    raise KeyError(f"unknown suite {name!r}; expected one of {SUITE_NAMES}")


__all__ = ["SUITE_NAMES", "CheckResult", "Example", "Suite", "get_suite", "split_of"]
