"""Short English tasks with single answers for a real chat model (SmolLM2-135M-Instruct and its draft).

Families (``meta["category"]``, one tier each): capitals of countries, a fact read from a given passage, small
sums, opposites, plurals. Items cycle
through the families in a fixed order, so every prefix of a split is balanced; a family whose held-out facts run
out is skipped from then on (the facts are few: see :mod:`evals.suites.english_facts`). Every fact belongs to one
split (:func:`evals.suites.english_facts.fact_split`), and prompts are filtered by the suites' prompt hash as well,
so no test fact is asked in train in any wording. The reference ``answer`` is a short sentence then
``answer: <value>`` (the suites' shared format); the checker does not require that format.

What it leaves out: model calls (``evals.zoo.real_pair_eval``) and multi-line items (``evals.suites.english_steps``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from evals.suites import english_facts as F
from evals.suites.base import SPLIT_SEEDS, SPLITS, CheckResult, Example, Suite, candidate, parse_output, safe_check
from evals.suites.base import split_of as prompt_split

FAMILIES: tuple[str, ...] = ("capital", "passage", "sum", "opposite", "plural")
TIERS: dict[str, str] = {"capital": "fact", "passage": "reading", "sum": "arithmetic", "opposite": "word",
                         "plural": "grammar"}
EXHAUSTED_AFTER = 400  # candidate draws in a row without a new held-out item before a family counts as used up


@dataclass(frozen=True)
class Asked:
    """One question: its text, the sentence that answers it, and what the judge needs."""

    text: str
    sentence: str
    question: F.Question


def _accepted(value: str, alternatives: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return (value, *alternatives.get(value, ()))


def capital_question(country: str, city: str, form: int) -> Asked:
    text = (f"What is the capital of {country}?", f"Which city is the capital of {country}?",
            f"What city is the capital of {country}?", f"Name the capital city of {country}.")[form % 4]
    sentence = f"The capital of {country} is {city}."
    return Asked(text, sentence[0].upper() + sentence[1:],
                 F.Question("capital", country, _accepted(city, F.CAPITAL_ALTERNATIVES)))


def word_question(family: str, word: str, answer: str, form: int) -> Asked:
    label = {"opposite": "opposite", "plural": "plural"}[family]
    text = (f'What is the {label} of "{word}"?', f'What is the {label} of the word "{word}"?',
            f'Give the {label} of "{word}".', f'Write the {label} of "{word}".')[form % 4]
    accepted = _accepted(answer, F.PLURAL_ALTERNATIVES) if family == "plural" else (answer, *[
        a for a in F.OPPOSITE_ALTERNATIVES.get(word, ()) if a != answer])
    return Asked(text, f'The {label} of "{word}" is "{answer}".', F.Question(family, word, accepted))


def sum_question(a: int, b: int, form: int) -> Asked:
    text = (f"What is {a} + {b}?", f"What is {a} plus {b}?", f"How much is {a} + {b}?", f"Add {a} and {b}.")[form % 4]
    return Asked(text, f"{a} + {b} = {a + b}.", F.Question("sum", "", (str(a + b),)))


def opposite_pool(split: str) -> list[tuple[str, str]]:
    """(word, opposite) both ways, for the pairs whose fact is in ``split`` (a pair is one fact)."""
    pairs = [p for p in F.OPPOSITES if F.fact_split(f"opposite:{'/'.join(sorted(p))}") == split]
    return pairs + [(b, a) for a, b in pairs]


def sum_pool(split: str) -> list[tuple[int, int]]:
    """Ordered addend pairs whose unordered pair is in ``split``."""
    return [(a, b) for a in range(1, F.SUM_MAX + 1) for b in range(1, F.SUM_MAX + 1)
            if F.fact_split(f"sum:{min(a, b)}+{max(a, b)}") == split]


def draw_questions(family: str, split: str, rng: random.Random, count: int, form: int | None = None) -> list[Asked]:
    """``count`` questions of one family about distinct facts of ``split``; wording ``form`` (0-3), drawn per
    question when ``None``."""
    def pick() -> int:
        return rng.randrange(4) if form is None else form

    if family == "capital":
        pool = F.facts_of(F.CAPITALS, "capital", split)
        return [capital_question(c, v, pick()) for c, v in rng.sample(pool, count)]
    if family == "plural":
        pool = F.facts_of(F.PLURALS, family, split)
        return [word_question(family, w, v, pick()) for w, v in rng.sample(pool, count)]
    if family == "opposite":
        chosen: list[tuple[str, str]] = []
        pool = opposite_pool(split)
        while len(chosen) < count:
            w, v = rng.choice(pool)
            if all(w not in c and v not in c for c in chosen):
                chosen.append((w, v))
        return [word_question("opposite", w, v, pick()) for w, v in chosen]
    if family == "sum":
        pool = sum_pool(split)
        picks: list[tuple[int, int]] = []
        while len(picks) < count:
            a, b = rng.choice(pool)
            if all(a + b != x + y for x, y in picks):
                picks.append((a, b))
        return [sum_question(a, b, pick()) for a, b in picks]
    raise KeyError(family)


@dataclass(frozen=True)
class Passage:
    text: str
    questions: tuple[Asked, ...]  # every question the passage can answer, in the order the text tells the facts


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def draw_passage(rng: random.Random) -> Passage:
    """One person with an age, a town and a coloured pet."""
    name, town, pet, colour = rng.choice(F.NAMES), rng.choice(F.TOWNS), rng.choice(F.PETS), rng.choice(F.COLOURS)
    return passage_about(name, rng.randint(6, 60), town, pet, colour)


def passage_about(name: str, age: int, town: str, pet: str, colour: str) -> Passage:
    """The passage telling these facts, with its questions (age, town, pet, colour)."""
    text = f"{name} is {age} years old and lives in {town}. {name} has {_a(colour)} {colour} {pet}."
    qs = (Asked(f"How old is {name}?", f"{name} is {age} years old.", F.Question("passage-age", name, (str(age),))),
          Asked(f"Where does {name} live?", f"{name} lives in {town}.", F.Question("passage-town", name, (town,))),
          Asked(f"What pet does {name} have?", f"{name} has a {pet}.", F.Question("passage-pet", name, (pet,))),
          Asked(f"What colour is {name}'s {pet}?", f"It is {colour}.", F.Question("passage-colour", name, (colour,))))
    return Passage(text, qs)


def passage_prompt(passage: Passage, asked: Asked) -> str:
    """The prompt asking one of a passage's questions about it."""
    return f"Read the text and answer the question.\nText: {passage.text}\nQuestion: {asked.text}"


SUFFIXES: tuple[str, ...] = ("", " Answer briefly.", " Answer in one short sentence.", " Give a short answer.")


class BalancedSuite(Suite):
    """A suite whose items cycle through families, each drawn from the requested split's facts."""

    families: tuple[str, ...] = ()

    def generate(self, rng: random.Random) -> Example:
        """A train item of a random family (the split-aware stream is :meth:`iter_examples`)."""
        return self.generate_in(rng.choice(self.families), "train", rng)

    def generate_in(self, family: str, split: str, rng: random.Random) -> Example:  # pragma: no cover - abstract
        raise NotImplementedError

    def iter_examples(self, split: str) -> Iterator[Example]:
        """Families in turn; candidates whose prompt hashes into another split are skipped, and validation/test are
        de-duplicated (a family that yields no new item in ``EXHAUSTED_AFTER`` draws is dropped from then on)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        rng = random.Random(f"{self.name}/{split}/{SPLIT_SEEDS[split]}")
        live = list(self.families)
        seen: set[str] = set()
        index = 0
        turn = 0
        while live:
            family = live[turn % len(live)]
            ex = self._next_of(family, split, rng, seen)
            if ex is None:
                live.remove(family)
                continue
            turn += 1
            yield Example(id=f"{self.name}/{split}/{index:05d}", suite=self.name, prompt=ex.prompt,
                          answer=ex.answer, final=ex.final, steps=ex.steps, meta=ex.meta)
            index += 1
        raise ValueError(f"{self.name}/{split}: every family's items are used up")

    def _next_of(self, family: str, split: str, rng: random.Random, seen: set[str]) -> Example | None:
        for _ in range(EXHAUSTED_AFTER):
            ex = self.generate_in(family, split, rng)
            if prompt_split(ex.prompt) != split or (split != "train" and ex.prompt in seen):
                continue
            if split != "train":
                seen.add(ex.prompt)
            return ex
        return None


def question_for(category: str, final: str) -> F.Question:
    """The question whose reference answer is ``final`` in ``category``'s word list (KeyError when none)."""
    if category == "sum":
        return F.Question("sum", "", (final,))
    pairs = {"capital": F.CAPITALS, "plural": F.PLURALS,
             "opposite": tuple(opposite_pool("train") + opposite_pool("validation") + opposite_pool("test"))}
    subject = next((w for w, v in pairs.get(category, ()) if v == final), None)
    if subject is None:
        raise KeyError(f"no {category!r} question has the answer {final!r}")
    if category == "capital":
        return F.Question("capital", subject, _accepted(final, F.CAPITAL_ALTERNATIVES))
    return word_question(category, subject, final, 0).question


def first_relevant_line(output: str, q: F.Question) -> str:
    """The line a single reply is judged on: an ``answer:`` value if any, else the first non-empty line that
    names anything of the question's family (a number, for sums), else the first non-empty line."""
    value = parse_output(output)[1]
    if value:
        return value
    lines = [ln for ln in output[:4_000].split("\n") if ln.strip()]
    for ln in lines:
        if (q.family == "sum" and any(ch.isdigit() for ch in ln)) or (q.family != "sum" and F.mentions(ln, q.family)):
            return ln
    return lines[0] if lines else ""


class EnglishSuite(BalancedSuite):
    """Single-answer English items; see the module docstring for the families."""

    name = "english"
    families = FAMILIES

    def generate_in(self, family: str, split: str, rng: random.Random) -> Example:
        suffix = rng.choice(SUFFIXES)
        if family == "passage":
            passage = draw_passage(rng)
            asked = rng.choice(passage.questions)
            prompt = passage_prompt(passage, asked)
        else:
            asked = draw_questions(family, split, rng, 1)[0]
            prompt = asked.text + suffix
        q = asked.question
        return candidate(self.name, prompt, [asked.sentence], q.accepted[0],
                         {"tier": TIERS[family], "category": family, "question": q.to_meta()})

    def _make(self, prompt: str, sentence: str, final: str, category: str) -> Example:
        """An item for a hand-written prompt (tests, probes); the question is looked up in the word lists by its
        answer (``category``: capital, opposite, plural or sum)."""
        q = question_for(category, final)
        return candidate(self.name, prompt, [sentence], final,
                         {"tier": TIERS[category], "category": category, "question": q.to_meta()})

    def check(self, example: Example, output: str) -> CheckResult:
        """Correct (1.0) when the reply gives the right answer: :func:`evals.suites.english_facts.judge_line` on the
        line :func:`first_relevant_line` picks ("The capital of France is Paris." and "paris!" are right for Paris,
        "The capital of France is Lyon." and "Paris or Rome" are wrong). Never raises."""
        def body() -> CheckResult:
            if not isinstance(output, str) or not output.strip():
                return CheckResult(0.0, None, "empty")
            q = F.Question.from_meta(example.meta["question"])
            ok = F.judge_line(first_relevant_line(output, q), q)
            return CheckResult(1.0 if ok else 0.0, None, "ok" if ok else "wrong final")
        return safe_check(body, None)

    def check_step(self, example: Example, prefix_steps: list[str], step: str) -> float:
        """A single-answer item has one step: the answer itself."""
        return self.check(example, step).score
