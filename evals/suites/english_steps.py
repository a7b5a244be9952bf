"""Multi-step English items for step-level collaboration (Arbitrage): two or three questions, one answer per line.

Each item asks two or three questions of one family at once (capitals, opposites, plurals, small sums, or facts
read from one passage, asked in the order the text tells them), as a numbered list under an instruction ("Answer each question on its own line."), every
question in the family's plain "What is ...?" wording (SmolLM2-135M echoes imperatives such as "Give the plural of
..." instead of answering them); the reference is the answer sentences, numbered, one per line, then
``answer: v1; v2[; v3]``.
Families cycle in a fixed order and every fact belongs to one split, as in :mod:`evals.suites.english`.

Scoring: the reply's lines answer the questions in order. Blank lines, an ``answer:`` line and lines that only echo
a question (ending in "?") are skipped; each remaining line answers the next question, and also the ones after it
whose subject it names (:func:`covers`: two capitals on one line); each answer is judged by
:func:`evals.suites.english_facts.judge_line` (case, punctuation, an enumeration "2." and wording are free; the
fact must be right). ``CheckResult.score`` is the share of questions answered right; ``step_scores`` has one entry
per question.

What it leaves out: model calls, and word problems whose steps depend on earlier steps (SmolLM2-135M does not
carry a number from one line to the next reliably).
"""

from __future__ import annotations

import random

from evals.suites import english_facts as F
from evals.suites.base import CheckResult, Example, candidate, is_answer_line, safe_check
from evals.suites.english import FAMILIES, TIERS, BalancedSuite, draw_passage, draw_questions

INSTRUCTIONS: tuple[str, ...] = ("Answer each question on its own line.",
                                 "Answer each question on its own line, numbered.")


def answer_lines(output: object) -> list[str]:
    """The reply's lines that count as answers, in order (see the module docstring)."""
    if not isinstance(output, str):
        return []
    out = []
    for raw in output[:4_000].split("\n"):
        line = raw.strip()
        if line and not is_answer_line(line) and not line.endswith("?"):
            out.append(line)
    return out


class EnglishStepsSuite(BalancedSuite):
    """Two or three questions of one family asked at once, answered one per line."""

    name = "english-steps"
    families = FAMILIES

    def generate_in(self, family: str, split: str, rng: random.Random) -> Example:
        count = rng.choice((2, 3))
        if family == "passage":
            passage = draw_passage(rng)
            asked = [passage.questions[i] for i in sorted(rng.sample(range(len(passage.questions)), count))]
            head = f"Text: {passage.text}\n{INSTRUCTIONS[0]}"
        else:
            asked = draw_questions(family, split, rng, count, form=0)
            head = rng.choice(INSTRUCTIONS)
        prompt = head + "\n" + "\n".join(f"{i + 1}. {a.text}" for i, a in enumerate(asked))
        steps = [f"{i + 1}. {a.sentence}" for i, a in enumerate(asked)]
        final = "; ".join(a.question.accepted[0] for a in asked)
        meta = {"tier": TIERS[family], "category": family, "steps": count,
                "questions": [a.question.to_meta() for a in asked]}
        return candidate(self.name, prompt, steps, final, meta)

    def _questions(self, example: Example) -> list[F.Question]:
        return [F.Question.from_meta(q) for q in example.meta.get("questions", [])]

    def check(self, example: Example, output: str) -> CheckResult:
        """Share of the questions answered right, one line each, in order (module docstring); never raises."""
        n = len(example.meta.get("questions", []))

        def body() -> CheckResult:
            questions = self._questions(example)
            scores = [0.0] * n
            done = 0
            lines = answer_lines(output)
            for line in lines:
                if done >= n:
                    break
                covered = covers(line, questions, done)
                for i in range(done, done + covered):
                    scores[i] = 1.0 if F.judge_line(line, questions[i]) else 0.0
                done += covered
            score = sum(scores) / n if n else 0.0
            detail = "ok" if score == 1.0 else "empty" if not lines else "wrong step"
            return CheckResult(score, scores, detail)
        return safe_check(body, n)

    def check_step(self, example: Example, prefix_steps: list[str], step: str) -> float:
        """1.0 when ``step`` rightly answers the first question the prefix's answer lines have not answered (blank
        and echo lines do not count; a blank or echo ``step`` scores 0); never raises."""
        try:
            questions = self._questions(example)
            done = 0
            for p in prefix_steps:
                for line in answer_lines(p):
                    done += covers(line, questions, done) if done < len(questions) else 0
            lines = answer_lines(step)
            if done >= len(questions) or len(lines) != 1:
                return 0.0
            return 1.0 if F.judge_line(lines[0], questions[done]) else 0.0
        except Exception:  # noqa: BLE001 - the contract is "never raises"
            return 0.0


def covers(line: str, questions: list[F.Question], start: int) -> int:
    """How many questions from ``start`` on a line answers: the one at ``start``, and, when it names that one's
    subject, each following one whose subject it names too ("The capital of Hungary is Budapest and the capital of
    Greece is Athens." answers two capital questions). Sums and passage questions (whose subject is shared) take one
    line each."""
    count = 1
    if start >= len(questions) or not F.names_subject(line, questions[start]):
        return count
    for q in questions[start + 1:]:
        if not F.names_subject(line, q):
            break
        count += 1
    return count
