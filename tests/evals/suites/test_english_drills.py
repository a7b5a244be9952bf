"""Copy drills: the english suite's shapes, about nothing any split holds, drawn the same for the same seed."""

from __future__ import annotations

import random
import re

from evals.suites import english_facts as F
from evals.suites.english import SUFFIXES
from evals.suites.english_drills import DRILL_KINDS, drill_prompt, drill_prompts, invented_word

_QUOTED = re.compile(r'"([^"]+)"')


def _fact_words() -> set[str]:
    words = {w.lower() for pairs in (F.CAPITALS, F.OPPOSITES, F.PLURALS) for pair in pairs for part in pair
             for w in part.split()}
    return words | {w.lower() for w in F.NAMES + F.TOWNS}


def test_drills_name_no_fact_of_any_split() -> None:
    known = _fact_words()
    prompts = drill_prompts(600)
    for p in prompts:
        for quoted in _QUOTED.findall(p):  # the word a plural or opposite drill asks about
            assert quoted.lower() not in known, p
        body = p.split("\n")[1] if p.startswith("Read the text") else p
        for name in re.findall(r"\b[A-Z][a-z]+\b", body):  # people, towns, countries
            assert name.lower() not in known or name in ("What", "Which", "Name", "Give", "Write", "How", "Add",
                                                         "Text", "Answer"), p
        for a, b in re.findall(r"(\d+) (?:\+|plus|and) (\d+)", p):  # sums ask no addend pair a split holds
            assert max(int(a), int(b)) > F.SUM_MAX, p


def test_drills_cover_every_kind_in_the_suites_wording_and_are_seeded() -> None:
    prompts = drill_prompts(300)
    assert len(set(prompts)) == 300 and prompts == drill_prompts(300) and prompts[:50] == drill_prompts(50)
    assert prompts != drill_prompts(300, seed=1)
    starts = {"passage": "Read the text and answer the question.\nText: ", "capital": "capital", "plural": "plural",
              "opposite": "opposite", "sum": None}
    seen = {k: 0 for k in starts}
    for p in prompts:
        kind = next((k for k, s in starts.items() if s and s in p), "sum")
        seen[kind] += 1
        if kind != "passage":
            assert any(p.endswith(s) for s in SUFFIXES if s) or p.endswith(("?", "."))
    assert all(seen[k] >= 20 for k in seen), seen
    assert seen["passage"] > max(seen[k] for k in seen if k != "passage")  # drawn twice as often
    assert DRILL_KINDS.count("passage") == 2


def test_a_passage_drill_repeats_its_invented_name_and_gives_every_fact() -> None:
    rng = random.Random(3)
    p = next(q for q in (drill_prompt(rng) for _ in range(50)) if q.startswith("Read the text"))
    text, question = p.split("\n")[1], p.split("\n")[2]
    name = text.removeprefix("Text: ").split(" ")[0]
    assert name in question and text.count(name) == 2
    assert re.search(r"is \d+ years old and lives in [A-Z][a-z]+\.", text)
    word = invented_word(random.Random(0), 2)
    assert word.isalpha() and word.islower()
