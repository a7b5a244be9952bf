"""TCAR's pure parts against hand-written cases: the router prompt, parsing the router's answer, the embedding
fallback (against a plain-Python twin) and the refining prompt."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest

from routers.tcar import OOS, build_prompt, cosine_scores, fallback, parse, refine_prompt

IDS = ["agt_math", "agt_sql", "agt_poem", "agt_law"]


@dataclass
class Card:
    id: str
    name: str
    description: str


# ---------------------------------------------------------------------------------------------------- parse


@pytest.mark.parametrize(("text", "expected"), [
    ("<Reason>arithmetic</Reason><ID>agt_math</ID>", ("arithmetic", ["agt_math"])),
    ("<Reason>two</Reason>\n<ID>agt_sql</ID>\n<ID>agt_math</ID>", ("two", ["agt_sql", "agt_math"])),
    ("<Reason>x</Reason><ID>agt_poem</ID><ID>agt_sql</ID><ID>agt_math</ID>", ("x", ["agt_poem", "agt_sql", "agt_math"])),
    # case, whitespace inside and around tags, quotes around ids
    ("<reason>  spaced \n out </REASON>< id > AGT_Math </ ID ><ID>`agt_sql`</id>", ("spaced out", ["agt_math", "agt_sql"])),
    # duplicates and unknown ids dropped, order kept
    ("<Reason>r</Reason><ID>agt_sql</ID><ID>nope</ID><ID>agt_sql</ID><ID>agt_law</ID>", ("r", ["agt_sql", "agt_law"])),
    # more than three: the first three
    ("<Reason>r</Reason><ID>agt_law</ID><ID>agt_poem</ID><ID>agt_sql</ID><ID>agt_math</ID>",
     ("r", ["agt_law", "agt_poem", "agt_sql"])),
    # missing reason
    ("<ID>agt_poem</ID>", ("", ["agt_poem"])),
    # a reasoning model's think block first; its ids do not count
    ("<think>maybe <ID>agt_law</ID>?</think><Reason>sql</Reason><ID>agt_sql</ID>", ("sql", ["agt_sql"])),
    # unclosed tags (the router ran out of tokens)
    ("<Reason>cut<ID>agt_math</ID><ID>agt_sql", ("cut", ["agt_math", "agt_sql"])),
    # out of scope, tagged or bare
    ("<Reason>weather is not covered</Reason><ID>oos</ID>", ("weather is not covered", OOS)),
    ("<Reason>none</Reason> OOS", ("none", OOS)),
    ("<Reason>none</Reason><ID> OOS </ID>", ("none", OOS)),
    # known ids win over oos in the same answer
    ("<Reason>r</Reason><ID>oos</ID><ID>agt_math</ID>", ("r", ["agt_math"])),
])
def test_parse_valid_answers(text, expected):
    assert parse(text, IDS) == expected


@pytest.mark.parametrize("text", [
    None, "", "   ", "I think the math agent", "<Reason>only a reason</Reason>", "<ID>unknown</ID><ID>agt_</ID>",
    "<Reason>mentions oos inside the reason only</Reason>", "<ID>agt_math_v2</ID>", "boost", "<ID></ID>",
])
def test_parse_unusable_answers_are_none(text):
    assert parse(text, IDS) is None


def test_parse_max_ids_and_spelling_of_ids():
    assert parse("<ID>AGT_SQL</ID><ID>agt_math</ID>", IDS, max_ids=1) == ("", ["agt_sql"])
    assert parse("<ID>Mixed_Case</ID>", ["Mixed_Case"]) == ("", ["Mixed_Case"])


# ---------------------------------------------------------------------------------------------------- prompt


def test_build_prompt_lists_every_agent_and_the_conversation():
    agents = [Card("agt_1", "Math", "Solves\narithmetic  problems"), Card("agt_2", "SQL", "Writes SQL")]
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "12*7?"},
            {"role": "assistant", "content": "84"}, {"role": "user", "content": [{"type": "text", "text": "why"}]}]
    out = build_prompt(agents, msgs)
    assert [m["role"] for m in out] == ["system", "user"]
    sys_text = out[0]["content"]
    assert "- ID: agt_1 | name: Math | description: Solves arithmetic problems" in sys_text
    assert "- ID: agt_2 | name: SQL | description: Writes SQL" in sys_text
    assert "<Reason>" in sys_text and "<ID>" in sys_text and "oos" in sys_text
    user = out[1]["content"]
    assert user.index("system: be brief") < user.index("user: 12*7?") < user.index("assistant: 84") < user.index(
        "user: why")
    assert "(no agents)" in build_prompt([], msgs)[0]["content"]


# ---------------------------------------------------------------------------------------------------- fallback


def ref_cosine(q: list[float], v: list[float]) -> float:
    nq = math.sqrt(sum(x * x for x in q))
    nv = math.sqrt(sum(x * x for x in v))
    return 0.0 if nq == 0 or nv == 0 else sum(a * b for a, b in zip(q, v, strict=True)) / (nq * nv)


def ref_fallback(q: list[float], agents: dict[str, list[float]], k: int, threshold: float) -> list[str]:
    scored = [(ref_cosine(q, v), i, a) for i, (a, v) in enumerate(agents.items())]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [a for s, _, a in scored if s >= threshold][:k]


def test_fallback_matches_its_reference_twin_on_random_vectors():
    rng = random.Random(7)
    for _ in range(200):
        dim = rng.randint(2, 12)
        q = [rng.gauss(0, 1) for _ in range(dim)]
        agents = {f"a{j}": [rng.gauss(0, 1) for _ in range(dim)] for j in range(rng.randint(0, 6))}
        k, thr = rng.randint(0, 4), rng.uniform(-0.5, 0.5)
        got = fallback(np.array(q), {a: np.array(v) for a, v in agents.items()}, k, thr)
        assert got == ref_fallback(q, agents, k, thr)
        scores = cosine_scores(np.array(q), {a: np.array(v) for a, v in agents.items()})
        for a, v in agents.items():
            assert scores[a] == pytest.approx(ref_cosine(q, v), abs=1e-9)


def test_fallback_hand_cases():
    agents = {"x": np.array([1.0, 0.0]), "y": np.array([0.0, 1.0]), "z": np.array([1.0, 1.0]), "0": np.zeros(2)}
    assert fallback(np.array([1.0, 0.1]), agents, k=2, threshold=0.5) == ["x", "z"]
    assert fallback(np.array([1.0, 0.1]), agents, k=3, threshold=0.5) == ["x", "z"]  # y is below the threshold
    assert fallback(np.array([-1.0, -1.0]), agents, k=3, threshold=0.2) == []  # nothing similar: out of scope
    assert fallback(np.zeros(2), agents, k=3, threshold=0.0) == ["x", "y", "z", "0"][:3]  # all 0.0, ties in order


# ---------------------------------------------------------------------------------------------------- refine


def test_refine_prompt_appends_answers_to_the_last_user_turn():
    msgs = [{"role": "system", "content": "answer in French"}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]
    out = refine_prompt(msgs, [("Math", "6"), ("Calc", " six \n")])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert "answer in French" in out[0]["content"] and "merge" in out[0]["content"].lower()
    last = out[-1]["content"]
    assert last.startswith("and 3+3?") and last.index("### Answer 1 (Math)\n6") < last.index("### Answer 2 (Calc)\nsix")
    assert msgs[-1]["content"] == "and 3+3?"  # the caller's messages are not modified


def test_refine_prompt_without_a_user_turn_or_answers():
    out = refine_prompt([{"role": "assistant", "content": "hi"}], [])
    assert [m["role"] for m in out] == ["system", "assistant", "user"] and "(none)" in out[-1]["content"]
