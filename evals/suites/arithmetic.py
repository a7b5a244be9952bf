"""Arithmetic word problems solved in written steps, with an exact process checker for every step.

A problem is a short story about one person's stock of items (``Ann has 48 boxes of 27 pens. Ann sells 356.``)
made of 2-6 operations (the tier): multi-digit multiplication (2-3 digit x 2 digit), buying/selling single packs
and whole packs (a product then a sum or difference), scaling by a digit, and exact division. Every step is one line
``a op b=c`` with integers and ``op`` in ``+ - * /``; the last line is ``answer: <value>``.

Design choice (so that model size matters but the task stays learnable by a char-level model): a multiplication by
a two-digit number with a non-zero units digit is written as partial products, e.g. ``48*27`` becomes
``48*20=960``, ``48*7=336``, ``960+336=1296``. Each line then needs at most a multi-digit-by-one-digit product or a
multi-digit sum/difference with carries, computed digit by digit within one line, which small models get wrong more
often than large ones.

The process checker (:meth:`ArithmeticSuite.check_step`) re-evaluates a step exactly and checks that its operands
are available: numbers stated in the problem, results of earlier steps, or (for a multiplication) a place-value part
of such a two-digit number (``20`` and ``7`` of ``27``). It judges validity, not the plan: a correct computation
that does not lead to the answer still scores 1 as a step; the final score catches the wrong plan. An ``answer:``
line scores 1 when its value is the right answer.

What it leaves out: fractions and decimals, negative intermediate results, and natural-language explanations.
"""

from __future__ import annotations

import random
import re

from evals.suites.base import (
    CheckResult,
    Example,
    Suite,
    candidate,
    is_answer_line,
    parse_output,
    safe_check,
)

NAMES = ("Ann", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jo", "Kim", "Lu", "Max", "Ned", "Ola", "Pam",
         "Raj", "Sam", "Tia", "Uma", "Vic")
# (items, container singular, container plural)
ITEMS = (("pens", "box", "boxes"), ("nuts", "bag", "bags"), ("eggs", "tray", "trays"), ("cards", "pack", "packs"),
         ("apples", "crate", "crates"), ("bolts", "kit", "kits"), ("beads", "jar", "jars"), ("stamps", "book", "books"))
MIN_TIER, MAX_TIER = 2, 6
MAX_CHARS = 300  # prompt + answer

_STEP = re.compile(r"^(-?\d+)\s*([-+*/x])\s*(-?\d+)\s*=\s*(-?\d+)$")
_INT = re.compile(r"-?\d+")


def multiply_lines(a: int, b: int) -> tuple[list[str], int]:
    """The written lines for ``a*b``: one line, or partial products when ``b`` has two digits and units != 0."""
    product = a * b
    if b < 10 or b % 10 == 0:
        return [f"{a}*{b}={product}"], product
    tens, units = b - b % 10, b % 10
    p1, p2 = a * tens, a * units
    return [f"{a}*{tens}={p1}", f"{a}*{units}={p2}", f"{p1}+{p2}={product}"], product


def place_parts(n: int) -> set[int]:
    """Place-value parts of ``n`` (``327`` -> ``{300, 20, 7}``), the numbers a partial product may use."""
    digits = str(abs(n))
    return {int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits) if d != "0"}


def evaluate(a: int, op: str, b: int) -> int | None:
    """Exact value of ``a op b`` (``None`` for a division that is not exact or by zero)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*x":
        return a * b
    if b == 0 or a % b:
        return None
    return a // b


def parse_step(line: str) -> tuple[int, str, int, int] | None:
    """``"48*27=1296"`` -> ``(48, "*", 27, 1296)``; ``None`` when the line is not one binary operation."""
    m = _STEP.match(line.strip())
    if not m or max(len(m.group(1)), len(m.group(3)), len(m.group(4))) > 60:
        return None
    return int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))


def problem_numbers(prompt: str) -> set[int]:
    return {int(x) for x in _INT.findall(prompt) if len(x) <= 60}


class _Available:
    """Numbers a step may use: the problem's numbers and the results written so far."""

    def __init__(self, prompt: str) -> None:
        self.numbers = problem_numbers(prompt)

    def step_ok(self, line: str) -> bool:
        parsed = parse_step(line)
        if parsed is None:
            return False
        a, op, b, c = parsed
        if evaluate(a, op, b) != c:
            return False
        if op in "*x":
            parts = set().union(*(place_parts(n) for n in self.numbers if 10 <= n <= 99))
            return (a in self.numbers and (b in self.numbers or b in parts)) or (
                b in self.numbers and a in parts)
        return a in self.numbers and b in self.numbers

    def add(self, line: str) -> None:
        parsed = parse_step(line)
        if parsed is not None:
            self.numbers.add(parsed[3])


def parse_int(text: str) -> int | None:
    s = text.strip().rstrip(".").replace(",", "")
    if not re.fullmatch(r"-?\d{1,60}", s):
        return None
    return int(s)


class ArithmeticSuite(Suite):
    """Word problems with 2-6 operations; exact final check and exact per-step process check."""

    name = "arithmetic"

    def generate(self, rng: random.Random) -> Example:
        while True:
            ex = self._draw(rng)
            if len(ex.prompt) + len(ex.answer) <= MAX_CHARS:
                return ex

    def _draw(self, rng: random.Random) -> Example:
        tier = rng.randint(MIN_TIER, MAX_TIER)
        who = rng.choice(NAMES)
        items, box, boxes = rng.choice(ITEMS)
        sentences: list[str] = []
        lines: list[str] = []
        ops_left = tier
        kinds: list[str] = []
        if rng.random() < 0.5:
            a, b = rng.randint(12, 199), rng.randint(11, 99)
            sentences.append(f"{who} has {a} {boxes} of {b} {items}.")
            new, value = multiply_lines(a, b)
            lines += new
            ops_left -= 1
            kinds.append("mul")
        else:
            value = rng.randint(100, 9999)
            sentences.append(f"{who} has {value} {items}.")
        while ops_left > 0:
            choices = ["add", "sub", "scale", "div"] + (["add_packs", "sub_packs"] if ops_left >= 2 else [])
            kind = rng.choice(choices)
            if kind == "add":
                n = rng.randint(10, 999)
                sentences.append(f"{who} buys {n} more.")
                lines.append(f"{value}+{n}={value + n}")
                value += n
            elif kind == "sub":
                if value < 20:
                    continue
                n = rng.randint(10, min(value - 1, 999))
                sentences.append(f"{who} sells {n}.")
                lines.append(f"{value}-{n}={value - n}")
                value -= n
            elif kind == "scale":
                if value > 20_000:
                    continue
                n = rng.randint(2, 9)
                sentences.append(f"{who} gets {n} times as many.")
                lines.append(f"{value}*{n}={value * n}")
                value *= n
            elif kind == "div":
                divisors = [d for d in range(2, 10) if value % d == 0]
                if not divisors:
                    continue
                n = rng.choice(divisors)
                sentences.append(f"{who} splits them into {n} equal piles and keeps one.")
                lines.append(f"{value}/{n}={value // n}")
                value //= n
            else:
                k, m = rng.randint(2, 19), rng.randint(11, 99)
                new, product = multiply_lines(m, k)
                if kind == "sub_packs" and product >= value:
                    continue
                verb = "buys" if kind == "add_packs" else "sells"
                more = " more" if kind == "add_packs" else ""
                sentences.append(f"{who} {verb} {k} {boxes} of {m}{more}.")
                lines += new
                sign = "+" if kind == "add_packs" else "-"
                result = value + product if kind == "add_packs" else value - product
                lines.append(f"{value}{sign}{product}={result}")
                value = result
                ops_left -= 1
            kinds.append(kind)
            ops_left -= 1
        sentences.append(f"How many {items} does {who} have?")
        meta = {"tier": tier, "difficulty": tier, "category": f"ops{tier}", "n_steps": len(lines),
                "ops": tuple(kinds)}
        return candidate(self.name, " ".join(sentences), lines, str(value), meta)

    def check_step(self, example: Example, prefix_steps: list[str], step: str) -> float:
        try:
            if is_answer_line(step):
                value = parse_int(step.strip()[len("answer:"):])
                return 1.0 if value is not None and str(value) == example.final else 0.0
            avail = _Available(example.prompt)
            for line in prefix_steps:
                avail.add(line)
            return 1.0 if avail.step_ok(step) else 0.0
        except Exception:  # noqa: BLE001 - never raises
            return 0.0

    def check(self, example: Example, output: str) -> CheckResult:
        def run() -> CheckResult:
            steps, final = parse_output(output)
            avail = _Available(example.prompt)
            scores: list[float] = []
            for line in steps:
                scores.append(1.0 if avail.step_ok(line) else 0.0)
                avail.add(line)
            if final is None:
                return CheckResult(0.0, scores, "malformed: no answer line")
            value = parse_int(final)
            if value is None:
                return CheckResult(0.0, scores, "malformed: final is not an integer")
            if str(value) != example.final:
                return CheckResult(0.0, scores, "wrong final")
            return CheckResult(1.0, scores, "ok")

        return safe_check(run, 0)
