"""R2R's oracle: the answer a router that knew which of the small model's tokens matter would write, and its labels.

The large model's greedy answer is the *plan*. At each position the small model's top token ``d`` is compared with
the plan's next token. Equal: the small model writes it. Different: the large model continues greedily after ``d``;
if the checker scores that answer at least as high as the plan, ``d`` stands (the small model writes it and the
continuation becomes the plan), else the plan's token does (the large model writes it). The plan's score never
falls, so every answer scores at least the large model's own, and the large model's share of answer tokens is the
fewest hand-overs by which a router keeps the large model's accuracy, greedily (one decision per position, one
continuation to judge it). :func:`plan_step` is the rule (pure); :func:`r2r_oracle` runs all prompts in lockstep so
each position's continuations decode in one batch (:func:`collab.labels.greedy_many`); :func:`oracle_labels` turns
its answers into R2R router samples (positive where the large model wrote), on the oracle's own path.

What it leaves out: the command and its summaries (``evals.collab_oracle``), sampling, and look-ahead beyond one
continuation per position.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from collab.features import DEFAULT_K, Signals, signals_from_logits
from collab.labels import R2RSample, greedy_many, small_state
from collab.protocol import LogitModel, TokenModel

Score = Callable[[int, list[int]], float]  # (item index, answer ids) → the checker's score of that answer


@dataclass
class OracleAnswer:
    """One item's oracle answer: its token ids (a stop token included where one ends it), who wrote each token
    (``"small"`` / ``"large"``), the checker's score of it and of the large model's own answer, how many
    continuations judged it."""

    ids: list[int]
    writers: list[str]
    score: float
    large_score: float
    continuations: int = 0
    signals: list[Signals] = field(default_factory=list)
    """The small model's signals at each position (before the token there was written), with its hidden state
    where the small model gives one."""


def plan_step(plan: list[int], plan_score: float, draft: int, continuation: list[int] | None,
              continuation_score: float | None) -> tuple[int, str, list[int], float]:
    """R2R's oracle rule at one position: the token written, its writer and the plan (and its score) after it.

    ``plan`` is the large model's greedy answer from here (non-empty), ``draft`` the small model's top token;
    ``continuation`` the large model's greedy answer after ``draft`` and ``continuation_score`` the score of the
    whole answer along it (both None where ``draft`` is the plan's token)."""
    if draft == plan[0]:
        return draft, "small", plan[1:], plan_score
    if continuation is None or continuation_score is None:
        raise ValueError("a draft token off the plan needs its continuation and score")
    if continuation_score >= plan_score:
        return draft, "small", list(continuation), continuation_score
    return plan[0], "large", plan[1:], plan_score


async def r2r_oracle(prompts: Sequence[list[int]], slm: LogitModel, llm: TokenModel, *, score: Score,
                     max_tokens: int, stop_ids: Sequence[int] = (), batch: int = 16, k: int = DEFAULT_K,
                     progress: bool = False) -> list[OracleAnswer]:
    """The oracle's answer to every prompt (see the module docstring); ``score(i, ids)`` scores an answer to
    prompt ``i``; ``batch``: prompts per batched large-model decode; ``k``: top logprobs kept in the signals."""
    stops = set(stop_ids)
    plans = await greedy_many(llm, [list(p) for p in prompts], [max_tokens] * len(prompts), list(stop_ids), batch)
    out = [OracleAnswer([], [], s, s) for s in (score(i, plan) for i, plan in enumerate(plans))]
    active = [i for i, plan in enumerate(plans) if plan]
    bar = tqdm(total=len(prompts), desc="oracle", unit="ex", disable=not progress, file=sys.stderr)
    while active:
        drafts = {}
        for i in active:
            logits, hidden = await small_state(slm, list(prompts[i]) + out[i].ids)
            drafts[i] = int(torch.argmax(logits))
            out[i].signals.append(signals_from_logits(logits, drafts[i], k, hidden))
        off = [i for i in active if drafts[i] != plans[i][0]]
        ask = [i for i in off if drafts[i] not in stops and len(out[i].ids) + 1 < max_tokens]
        conts = dict(zip(ask, await greedy_many(
            llm, [list(prompts[i]) + out[i].ids + [drafts[i]] for i in ask],
            [max_tokens - len(out[i].ids) - 1 for i in ask], list(stop_ids), batch), strict=True))
        still = []
        for i in active:
            cont = conts.get(i, []) if i in off else None
            cont_score = score(i, out[i].ids + [drafts[i]] + cont) if cont is not None else None
            # out[i].score is the plan's score until the answer is written out, then the answer's
            tok, writer, plans[i], out[i].score = plan_step(plans[i], out[i].score, drafts[i], cont, cont_score)
            out[i].ids.append(tok)
            out[i].writers.append(writer)
            out[i].continuations += i in ask
            if plans[i] and tok not in stops and len(out[i].ids) < max_tokens:
                still.append(i)
            else:
                bar.update(1)
        active = still
    bar.update(len(prompts) - bar.n)  # the prompts with an empty plan
    bar.close()
    return out


def oracle_labels(answers: Sequence[OracleAnswer]) -> list[R2RSample]:
    """R2R router samples along the oracle's answers: at every position the small model's signals, label 1 where
    the large model wrote the token (a difference that would have lowered the score), 0 elsewhere."""
    return [R2RSample(sig, int(writer == "large"), ex_i, pos)
            for ex_i, a in enumerate(answers) for pos, (sig, writer) in enumerate(zip(a.signals, a.writers, strict=True))]

