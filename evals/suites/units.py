"""Unit conversion in written steps: recall of conversion factors and exact decimal arithmetic.

Prompts are terse (``convert 3.5 km to m``); the reference writes one multiplication, division, addition or
subtraction per line (``3.5*1000=3500``) then ``answer: 3500``. Tiers (1-5):

1. one hop along a ladder (km -> m, h -> min, ft -> in; up the ladder divides);
2. two hops (km -> cm, h -> s, yd -> in);
3. three hops, or across systems via 1 in = 2.54 cm (ft -> cm);
4. mixed quantities (``2 h 15 min to min``) and rates (``72 km/h to m/s``);
5. temperature, C <-> F, in three lines (``25*9=225``, ``225/5=45``, ``45+32=77``).

Values are generated in the larger unit as short decimals, so every intermediate and final value is an exact
terminating decimal. The final checker compares the answer as an exact rational number (``3500``, ``3500.0`` and
``3500 m`` all count). The process checker is a reference matcher: a step line scores 1 when it equals, ignoring
whitespace, the line the reference writes at that position (an ``answer:`` line scores 1 when its value is right).

What it leaves out: approximate factors (lb <-> kg), significant-figure rounding, and other orderings of steps.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from evals.suites.base import (
    CheckResult,
    Example,
    Suite,
    candidate,
    is_answer_line,
    normalize_line,
    parse_output,
    safe_check,
)

# Ladders: units from small to large, and the factor from each unit to the next.
LADDERS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "length": (("mm", "cm", "m", "km"), (10, 100, 1000)),
    "imperial": (("in", "ft", "yd", "mi"), (12, 3, 1760)),
    "mass": (("mg", "g", "kg", "t"), (1000, 1000, 1000)),
    "time": (("s", "min", "h", "day", "week"), (60, 60, 24, 7)),
    "volume": (("ml", "l", "kl"), (1000, 1000)),
}
CM_PER_IN = Fraction(254, 100)
MIN_TIER, MAX_TIER = 1, 5

_NUM = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")


def fmt(x: Fraction) -> str:
    """Exact decimal string of a terminating fraction (``Fraction(7, 2)`` -> ``"3.5"``)."""
    n, d = x.numerator, x.denominator
    if d == 1:
        return str(n)
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1:
        raise ValueError(f"{x} is not a terminating decimal")
    k = max(twos, fives)
    scaled = abs(n) * (10**k // x.denominator)
    digits = str(scaled).rjust(k + 1, "0")
    return ("-" if n < 0 else "") + digits[:-k] + "." + digits[-k:]


def parse_number(text: str) -> Fraction | None:
    """A decimal number as an exact fraction; ``None`` when it is not one."""
    s = text.strip().replace(",", "")
    if len(s) > 60 or not _NUM.match(s):
        return None
    return Fraction(s)


def _nice(rng: random.Random) -> Fraction:
    """A short value in the larger unit: an integer 1..99, or one decimal place 0.1..99.9."""
    if rng.random() < 0.6:
        return Fraction(rng.randint(1, 99))
    return Fraction(rng.randint(1, 999), 10)


def _line(a: Fraction, op: str, b: Fraction, c: Fraction) -> str:
    return f"{fmt(a)}{op}{fmt(b)}={fmt(c)}"


def _hops(rng: random.Random, n_hops: int) -> tuple[str, list[str], Fraction, str]:
    """A conversion ``n_hops`` apart along one ladder; returns prompt, steps, final, category."""
    ladders = [k for k, (units, _) in LADDERS.items() if len(units) > n_hops]
    units, factors = LADDERS[rng.choice(ladders)]
    lo = rng.randrange(0, len(units) - n_hops)
    hi = lo + n_hops
    big = _nice(rng)  # value in units[hi]
    values = [big]
    for i in range(hi - 1, lo - 1, -1):
        values.append(values[-1] * factors[i])
    values.reverse()  # values[j] is the quantity in units[lo + j]
    steps: list[str] = []
    if rng.random() < 0.5:  # small -> large: divide
        for j in range(n_hops):
            steps.append(_line(values[j], "/", Fraction(factors[lo + j]), values[j + 1]))
        prompt, final = f"convert {fmt(values[0])} {units[lo]} to {units[hi]}", values[-1]
    else:
        for j in range(n_hops, 0, -1):
            steps.append(_line(values[j], "*", Fraction(factors[lo + j - 1]), values[j - 1]))
        prompt, final = f"convert {fmt(values[-1])} {units[hi]} to {units[lo]}", values[0]
    return prompt, steps, final, ["one_hop", "two_hop", "three_hop"][n_hops - 1]


def _cross(rng: random.Random) -> tuple[str, list[str], Fraction, str]:
    """Imperial to metric via inches: ``5 ft to cm`` -> ``5*12=60``, ``60*2.54=152.4``."""
    unit, to_in = rng.choice((("in", 1), ("ft", 12), ("yd", 36)))
    target, per_cm = rng.choice((("cm", 1), ("mm", 10)))
    value = _nice(rng)
    steps: list[str] = []
    inches = value * to_in
    if to_in != 1:
        steps.append(_line(value, "*", Fraction(to_in), inches))
    cm = inches * CM_PER_IN
    steps.append(_line(inches, "*", CM_PER_IN, cm))
    final = cm
    if per_cm != 1:
        final = cm * per_cm
        steps.append(_line(cm, "*", Fraction(per_cm), final))
    return f"convert {fmt(value)} {unit} to {target}", steps, final, "cross"


def _mixed(rng: random.Random) -> tuple[str, list[str], Fraction, str]:
    """``2 h 15 min to min`` or a rate ``72 km/h to m/s``."""
    if rng.random() < 0.3:
        v = Fraction(rng.choice(range(18, 361, 18)))  # km/h values that give exact m/s
        m = v * 1000
        final = m / 3600
        steps = [_line(v, "*", Fraction(1000), m), _line(m, "/", Fraction(3600), final)]
        return f"convert {fmt(v)} km/h to m/s", steps, final, "rate"
    name = rng.choice(tuple(LADDERS))
    units, factors = LADDERS[name]
    i = rng.randrange(0, len(units) - 1)
    big, small = rng.randint(1, 99), rng.randint(1, factors[i] - 1)
    prod = Fraction(big * factors[i])
    final = prod + small
    steps = [_line(Fraction(big), "*", Fraction(factors[i]), prod), _line(prod, "+", Fraction(small), final)]
    return f"convert {big} {units[i + 1]} {small} {units[i]} to {units[i]}", steps, final, "mixed"


def _temperature(rng: random.Random) -> tuple[str, list[str], Fraction, str]:
    c = Fraction(rng.randint(-50, 300))  # an integer Celsius value gives F with at most one decimal
    f = c * 9 / 5 + 32
    if rng.random() < 0.5:
        steps = [_line(c, "*", Fraction(9), c * 9), _line(c * 9, "/", Fraction(5), c * 9 / 5),
                 _line(c * 9 / 5, "+", Fraction(32), f)]
        return f"convert {fmt(c)} C to F", steps, f, "temperature"
    steps = [_line(f, "-", Fraction(32), f - 32), _line(f - 32, "*", Fraction(5), (f - 32) * 5),
             _line((f - 32) * 5, "/", Fraction(9), c)]
    return f"convert {fmt(f)} F to C", steps, c, "temperature"


class UnitsSuite(Suite):
    """Unit conversions in 1-3 written steps, tiers 1-5; exact final check, reference-matching step check."""

    name = "units"

    def generate(self, rng: random.Random) -> Example:
        tier = rng.randint(MIN_TIER, MAX_TIER)
        if tier <= 2:
            prompt, steps, final, category = _hops(rng, tier)
        elif tier == 3:
            prompt, steps, final, category = _hops(rng, 3) if rng.random() < 0.5 else _cross(rng)
        elif tier == 4:
            prompt, steps, final, category = _mixed(rng)
        else:
            prompt, steps, final, category = _temperature(rng)
        meta = {"tier": tier, "difficulty": tier, "category": category, "n_steps": len(steps)}
        return candidate(self.name, prompt, steps, fmt(final), meta)

    @staticmethod
    def _final_ok(example: Example, text: str) -> bool | None:
        """``True``/``False`` for a readable value (an optional trailing unit is ignored), ``None`` if unreadable."""
        parts = text.strip().split()
        value = parse_number(parts[0]) if parts and len(parts) <= 2 else None
        if value is None:
            return None
        return value == Fraction(example.final)

    def check_step(self, example: Example, prefix_steps: list[str], step: str) -> float:
        try:
            if is_answer_line(step):
                return 1.0 if self._final_ok(example, step.strip()[len("answer:"):]) else 0.0
            i = len(prefix_steps)
            return 1.0 if i < len(example.steps) and normalize_line(step) == normalize_line(example.steps[i]) else 0.0
        except Exception:  # noqa: BLE001 - never raises
            return 0.0

    def check(self, example: Example, output: str) -> CheckResult:
        def run() -> CheckResult:
            steps, final = parse_output(output)
            ref = [normalize_line(s) for s in example.steps]
            scores = [1.0 if i < len(ref) and normalize_line(s) == ref[i] else 0.0 for i, s in enumerate(steps)]
            if final is None:
                return CheckResult(0.0, scores, "malformed: no answer line")
            ok = self._final_ok(example, final)
            if ok is None:
                return CheckResult(0.0, scores, "malformed: final is not a number")
            return CheckResult(1.0, scores, "ok") if ok else CheckResult(0.0, scores, "wrong final")

        return safe_check(run, 0)
