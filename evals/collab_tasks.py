"""Task data for collaboration training and evaluation: one suite or a mixed-domain suite, and a suite-checker PRM.

- :func:`task_examples` — ``"arithmetic"`` is one suite; ``"mixed"`` (all suites) or ``"sql,units"`` interleaves the
  named suites' examples round-robin (so any prefix is balanced). Each example is checked by its own suite
  (:func:`check`, :func:`check_step`), found by ``example.suite``.
- :class:`SuitePRM` — a process reward (a ``collab.protocol.ProcessReward``) for Arbitrage's RSD/oracle modes behind
  the gateway, where a request carries only its prompt: it finds the example whose prompt the session's decoded prompt
  holds (in the suites' test and validation splits) and scores a step with that suite's step checker. A route's params
  spell it ``prm: "suite:arithmetic"``; :func:`parse_prm` is the resolver whoever builds the route calls (``collab``
  never resolves a name itself).

What it leaves out: the suites themselves (``evals.suites``) and any model calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from collab.protocol import StepScorer
from evals.suites import SUITE_NAMES, get_suite

MIXED = "mixed"


def suite_names(spec: str) -> list[str]:
    """``"mixed"`` → every suite; ``"a,b"`` → both; ``"a"`` → one."""
    if spec == MIXED:
        return list(SUITE_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITE_NAMES]
    if not names or unknown:
        raise KeyError(f"unknown suite(s) {unknown or spec!r}; expected {', '.join(SUITE_NAMES)}, a comma list or "
                       f"'{MIXED}'")
    return names


def interleave(groups: Sequence[Sequence[Any]], n: int | None = None) -> list[Any]:
    """Round-robin over ``groups`` (a group that runs out is skipped), cut to ``n`` items."""
    out: list[Any] = []
    i = 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out if n is None else out[:n]


@lru_cache(maxsize=8)
def _suite(name: str) -> Any:
    return get_suite(name)


def task_examples(spec: str, split: str, n: int) -> list[Any]:
    """The first ``n`` examples of ``split`` for one suite or a mix (see the module docstring)."""
    names = suite_names(spec)
    per = -(-n // len(names))  # ceil
    return interleave([_suite(s).examples(split, per) for s in names], n)


def check(example: Any, output: str) -> float:
    """The example's own suite checker's score (0..1)."""
    return float(_suite(example.suite).check(example, output).score)


def check_step(example: Any, prefix_steps: list[str], step: str) -> float:
    return float(_suite(example.suite).check_step(example, list(prefix_steps), step))


def step_delimiter(spec: str) -> str:
    """The suites' common step delimiter (``"\\n"`` for the built-in suites)."""
    delims = {_suite(s).step_delimiter for s in suite_names(spec)}
    return delims.pop() if len(delims) == 1 else "\n"


def clean_step(step: str) -> str:
    """A step's text as a checker wants it: one line, without the delimiter."""
    return step.strip()


class SuitePRM:
    """Step scores from the suites' step checkers, for prompts of their test / validation splits (a
    ``collab.protocol.ProcessReward``: ``scorer`` binds it to one request's prompt)."""

    def __init__(self, spec: str, splits: Sequence[str] = ("test", "validation")):
        self.by_prompt: dict[str, Any] = {}
        for name in suite_names(spec):
            for split in splits:
                for ex in _suite(name).examples(split):
                    self.by_prompt.setdefault(ex.prompt.strip(), ex)

    def find(self, prompt_text: str) -> Any:
        """The example whose prompt the decoded chat prompt holds (its user turn, specials removed): the whole text,
        one of its lines, else the longest known prompt inside it (a prompt of several lines)."""
        text = prompt_text.strip()
        ex = self.by_prompt.get(text)
        if ex is None:
            for line in (ln.strip() for ln in text.splitlines()):
                if line in self.by_prompt:
                    return self.by_prompt[line]
            inside = [p for p in self.by_prompt if "\n" in p and p in text]
            if inside:
                return self.by_prompt[max(inside, key=len)]
            raise KeyError("the suite PRM knows no example with this prompt")
        return ex

    def scorer(self, prompt_text: str) -> StepScorer:
        """``(prefix_steps, step) -> score`` bound to the example of ``prompt_text``."""
        ex = self.find(prompt_text)
        return lambda prefix, step: check_step(ex, [clean_step(p) for p in prefix], clean_step(step))


@lru_cache(maxsize=4)
def suite_prm(spec: str) -> SuitePRM:
    """A cached :class:`SuitePRM` (``spec`` as in :func:`suite_names`)."""
    return SuitePRM(spec)


def parse_prm(value: str) -> SuitePRM:
    """``"suite:NAME"`` → :func:`suite_prm` (the only PRM a route can name today): what a route builder hands
    ``ArbitrageStrategy(prm=...)`` in place of the name."""
    kind, _, arg = value.partition(":")
    if kind != "suite" or not arg:
        raise ValueError(f"unknown PRM {value!r}: expected 'suite:<suite name | mixed>'")
    return suite_prm(arg)
