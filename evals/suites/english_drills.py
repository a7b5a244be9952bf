"""Copy drills for the real pair's draft: prompts in the English suite's shapes about invented names and words.

A two-layer draft distilled on the suite's own train items (a few dozen countries, words, people and towns)
learns those items' answers more than copying what the prompt gives: along SmolLM2's held-out replies its top
token was "rich" where the question asked for the opposite of "open", and "Fair" where the passage said Oakdale.
The drills ask the same kinds of question about things no split holds — invented people, towns, countries and
words, and sums with an addend above :data:`evals.suites.english_facts.SUM_MAX` — so the only way to follow
SmolLM2's reply is to copy from the prompt.
No drill names a fact of any split (``tests/evals/suites/test_english_drills.py`` checks it against every list).

What it leaves out: answers and checkers (a drill is only a prompt: the teacher's reply is the target,
:mod:`evals.zoo.smol_draft`), and multi-line items.
"""

from __future__ import annotations

import random

from evals.suites import english_facts as F
from evals.suites.english import (
    SUFFIXES,
    capital_question,
    passage_about,
    passage_prompt,
    sum_question,
    word_question,
)

DRILL_KINDS: tuple[str, ...] = ("passage", "passage", "capital", "plural", "opposite", "sum")
"""Drawn uniformly per drill: passages twice as often (their answers copy the most)."""
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl", "kr", "pl",
           "st", "tr", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ee")
_CODAS = ("", "", "n", "r", "l", "m", "s", "k", "nd", "rt")
_TOWN_ENDS = ("ton", "ford", "dale", "field", "wick", "bury", "more", "stead", "brook", "haven")
_COUNTRY_ENDS = ("ia", "land", "stan", "ania", "ovia", "ar", "esh")


def invented_word(rng: random.Random, syllables: int) -> str:
    """A pronounceable lowercase non-word of ``syllables`` syllables."""
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def _known_words() -> set[str]:
    """Every word of every fact list, lower-cased (a drill never uses one)."""
    words: set[str] = set()
    for pairs in (F.CAPITALS, F.OPPOSITES, F.PLURALS):
        for pair in pairs:
            for part in pair:
                words.update(w.lower() for w in part.split())
    for pool in (F.NAMES, F.TOWNS, F.PETS, F.COLOURS):
        words.update(w.lower() for w in pool)
    return words


def _fresh(rng: random.Random, known: set[str], syllables: tuple[int, int], suffix: str = "") -> str:
    while True:
        word = invented_word(rng, rng.randint(*syllables)) + suffix
        if word not in known and word[:-len(suffix) or None] not in known:
            return word


def drill_prompt(rng: random.Random, known: set[str] | None = None) -> str:
    """One drill prompt (its kind drawn from :data:`DRILL_KINDS`), worded as the suite words its items."""
    known = _known_words() if known is None else known
    kind = rng.choice(DRILL_KINDS)
    suffix = rng.choice(SUFFIXES)
    form = rng.randrange(4)
    if kind == "passage":
        name = _fresh(rng, known, (1, 2)).capitalize()
        town = _fresh(rng, known, (1, 2), rng.choice(_TOWN_ENDS)).capitalize()
        pet, colour, age = rng.choice(F.PETS), rng.choice(F.COLOURS), rng.randint(2, 99)
        passage = passage_about(name, age, town, pet, colour)
        return passage_prompt(passage, rng.choice(passage.questions))
    if kind == "capital":
        country = _fresh(rng, known, (1, 2), rng.choice(_COUNTRY_ENDS)).capitalize()
        return capital_question(country, "", form).text + suffix
    if kind in ("plural", "opposite"):
        return word_question(kind, _fresh(rng, known, (1, 2)), "", form).text + suffix
    a, b = rng.randint(F.SUM_MAX + 1, 99), rng.randint(1, 99)
    a, b = (a, b) if rng.random() < 0.5 else (b, a)
    return sum_question(a, b, form).text + suffix


def drill_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct drill prompts, the same for the same ``(n, seed)``."""
    rng = random.Random(f"english-drills/{seed}")
    known = _known_words()
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        p = drill_prompt(rng, known)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
