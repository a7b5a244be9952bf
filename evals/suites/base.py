"""The common shape of a task suite: examples with reference completions, splits, and a never-raising checker.

A suite generates :class:`Example` objects from fixed seeds. Every prompt is assigned to exactly one split by a
stable hash of its text (:func:`split_of`: 80% train, 10% validation, 10% test), so the splits are disjoint by
content *by construction*: a generator draws candidates from a per-split seed and keeps only those whose prompt
hashes into the requested split. Validation and test are de-duplicated; train is a stream (it may repeat a prompt)
so that it can be as long as a trainer wants. ``examples(split, n)`` is a prefix of ``examples(split, n + k)``.

Reference completions follow one format: worked steps, one per line, then ``answer: <value>`` (SQL: the query on a
single line). Helpers here parse a model's output into step lines and a final value without ever raising.

What it leaves out: the tasks themselves (``arithmetic``, ``sql``, ``units``) and any model calls.
"""

from __future__ import annotations

import random
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_SIZES: dict[str, int] = {"train": 20_000, "validation": 300, "test": 300}
SPLIT_SEEDS: dict[str, int] = {"train": 1, "validation": 2, "test": 3}
MAX_OUTPUT_CHARS = 4_000  # longer outputs are judged on their first MAX_OUTPUT_CHARS characters
ANSWER_PREFIX = "answer:"


@dataclass(frozen=True)
class Example:
    """One task instance with its reference completion."""

    id: str  # stable, e.g. "arithmetic/test/00042"
    suite: str
    prompt: str  # the user message (ASCII, short)
    answer: str  # reference completion: step lines then "answer: <value>" (SQL: the query)
    final: str  # the final value / query
    steps: tuple[str, ...]  # the step lines of `answer` (without the "answer:" line; empty for SQL)
    meta: dict = field(default_factory=dict)  # always has "tier" and "category"


@dataclass
class CheckResult:
    """A checker's verdict on one output."""

    score: float  # 0..1
    step_scores: list[float] | None  # per written step (1 correct, 0 wrong); None where the suite has no steps
    detail: str  # short reason: "ok", "wrong final", "malformed", "sql error: ..."


def split_of(prompt: str) -> str:
    """The split a prompt belongs to: a stable (process-independent) hash, 80/10/10 train/validation/test."""
    bucket = zlib.crc32(prompt.encode("utf-8", "replace")) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def answer_text(steps: list[str] | tuple[str, ...], final: str) -> str:
    """The reference completion: the step lines, then the ``answer:`` line."""
    return "\n".join([*steps, f"{ANSWER_PREFIX} {final}"])


def is_answer_line(line: str) -> bool:
    return line.strip().lower().startswith(ANSWER_PREFIX)


def parse_output(output: object) -> tuple[list[str], str | None]:
    """Split a model output into its step lines (before the first ``answer:`` line) and the final value.

    Never raises: a non-string is treated as empty; blank lines are skipped; the final value is ``None`` when no
    ``answer:`` line exists. Only the first ``MAX_OUTPUT_CHARS`` characters are read."""
    if not isinstance(output, str):
        return [], None
    steps: list[str] = []
    for raw in output[:MAX_OUTPUT_CHARS].split("\n"):
        line = raw.strip()
        if not line:
            continue
        if is_answer_line(line):
            return steps, line[len(ANSWER_PREFIX):].strip()
        steps.append(line)
    return steps, None


_WS = re.compile(r"\s+")


def normalize_line(line: str) -> str:
    """Whitespace-insensitive form of a step line (all whitespace removed, lower case)."""
    return _WS.sub("", line).lower()


class Suite(ABC):
    """A task suite: deterministic splits of examples and an exact checker."""

    name: str = ""
    step_delimiter: str = "\n"

    @abstractmethod
    def generate(self, rng: random.Random) -> Example:
        """One candidate example drawn from ``rng`` (id and split are assigned by :meth:`examples`)."""

    @abstractmethod
    def check(self, example: Example, output: str) -> CheckResult:
        """Score ``output`` against ``example``; never raises."""

    @abstractmethod
    def check_step(self, example: Example, prefix_steps: list[str], step: str) -> float:
        """Process checker: 1.0 if ``step`` is a correct next line after ``prefix_steps``, else 0.0; never raises."""

    def iter_examples(self, split: str) -> Iterator[Example]:
        """The endless (train) or de-duplicated (validation/test) stream of a split's examples, in a fixed order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        rng = random.Random(f"{self.name}/{split}/{SPLIT_SEEDS[split]}")
        seen: set[str] = set()
        index = 0
        while True:
            ex = self.generate(rng)
            if split_of(ex.prompt) != split:
                continue
            if split != "train":
                if ex.prompt in seen:
                    continue
                seen.add(ex.prompt)
            yield Example(
                id=f"{self.name}/{split}/{index:05d}", suite=self.name, prompt=ex.prompt, answer=ex.answer,
                final=ex.final, steps=ex.steps, meta=ex.meta,
            )
            index += 1

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        """The first ``n`` examples of ``split`` (default: ``DEFAULT_SIZES[split]``); deterministic."""
        count = DEFAULT_SIZES[split] if n is None and split in DEFAULT_SIZES else n
        stream = self.iter_examples(split)
        return [next(stream) for _ in range(int(count or 0))]


def safe_check(fn: Callable[[], CheckResult], n_steps: int | None) -> CheckResult:
    """Run a checker body, turning any unexpected exception into a zero score (checkers never raise)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        return CheckResult(0.0, None if n_steps is None else [0.0] * n_steps, f"malformed: {type(exc).__name__}")


def candidate(suite: str, prompt: str, steps: list[str], final: str, meta: dict) -> Example:
    """A generated example before split assignment (id is filled in by :meth:`Suite.iter_examples`)."""
    return Example(id="", suite=suite, prompt=prompt, answer=answer_text(steps, final), final=final,
                   steps=tuple(steps), meta=meta)
