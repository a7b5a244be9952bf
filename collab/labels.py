"""Label pipelines: training data for each strategy's router, made from the models themselves.

- :func:`r2r_labels` — the large model writes a response; the small model is teacher-forced over it; at each position
  where the small model's top token differs, the large model continues from both tokens and the position is
  *divergent* (label 1) iff the outcomes differ (``outcome(example, answer_ids)``, e.g. the task checker's verdict).
  Agreeing positions are label 0. The large model's own branch is its response itself (greedy continuation).
  With ``label="different"`` every position where the top tokens differ is 1 and nothing is continued: the labels
  of a router that hands the large model every token it would write otherwise (along its answers, R2R then writes
  exactly the large model's greedy answer), made with one greedy answer per example instead of one per difference.
  A large model that decodes several prompts at once (:class:`BatchGreedy`, e.g. ``collab.inproc.HFModel``) writes
  the responses of ``batch`` examples together and all continuations of an example together (the same greedy
  tokens as one ``complete_ids`` call each, far fewer forward passes).
- :func:`r2r_labels_along` — the same labels along answers someone else wrote (R2R itself with a trained router:
  on-policy, DAgger-style), where the large model's token at each position is its greedy choice after that prefix and
  both branches are continued.
- :func:`fusion_examples` — teacher-forced expert log-probabilities at the positions where the experts' top tokens
  disagree, over given (prompt, answer) sequences.
- :func:`arbitrage_labels` — both models write each step from the same prefix; a step scorer rates both; the sample
  is the draft step's features with ``advantage = score(target) − score(draft)``; the better step (ties → draft)
  continues the trajectory. With ``rollout`` (a model) and ``outcome`` (the task's final checker), a step's score is
  ``max(checker, outcome of the rollout's greedy completion after the step)``: a Monte-Carlo process reward that
  also credits a correct step the checker rejects (a reference matcher marks a valid other decomposition, e.g.
  ``26*10=260`` for ``26*100=2600``, as wrong) — one rollout per written step.

The small model / experts must run in process (full logits); the writers may be remote. What it leaves out: the
training loops (``evals.collab_train``) and task data (``evals.suites``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import torch

from collab.arbitrage import write_step
from collab.features import DEFAULT_K, Signals, signals_from_logits, step_features
from collab.protocol import LogitModel, SequenceScorer, StatefulModel, TokenModel
from collab.session import Session

Outcome = Callable[[Any, list[int]], Hashable]
LABELS = ("divergent", "different")  # what a positive R2R label is: an outcome that changes / a top token that does


def _bar(items: Sequence[Any], progress: bool, desc: str) -> Any:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="ex")


@dataclass
class R2RSample:
    signals: Signals
    label: int
    example: int
    position: int


async def small_state(model: LogitModel, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The small model's next-token logits after ``ids`` and its last hidden state where it gives one
    (:class:`collab.protocol.StatefulModel`; else None), float32 on the CPU."""
    if isinstance(model, StatefulModel):
        logits, hidden = model.next_state(ids)
        return logits.float().cpu(), hidden.float().cpu()
    return model.next_logits(ids).float().cpu(), None


@runtime_checkable
class BatchGreedy(Protocol):
    """A model that decodes several token-id prompts greedily at once: row ``i`` at most ``max_tokens[i]`` tokens,
    ending with its stop token if it writes one (the tokens of one greedy ``complete_ids`` call per prompt)."""

    def greedy_batch(self, prompts: list[list[int]], max_tokens: list[int], stop_ids: list[int] | None = None
                     ) -> list[list[int]]: ...


async def greedy_many(model: TokenModel, prompts: Sequence[list[int]], max_tokens: Sequence[int],
                      stop_ids: Sequence[int] = (), batch: int = 16) -> list[list[int]]:
    """Greedy continuations of ``prompts``: in batches of ``batch`` from a :class:`BatchGreedy` model, else one
    ``complete_ids`` call each."""
    if isinstance(model, BatchGreedy) and batch > 1:
        out: list[list[int]] = []
        for j in range(0, len(prompts), batch):
            out += model.greedy_batch([list(p) for p in prompts[j:j + batch]], list(max_tokens[j:j + batch]),
                                      list(stop_ids))
        return out
    return [(await model.complete_ids(list(p), b, stop_ids=list(stop_ids))).token_ids
            for p, b in zip(prompts, max_tokens, strict=True)]


def _cont_budget(max_tokens: int, resp_len: int, i: int, slack: int | None) -> int:
    """Tokens a continuation after position ``i`` may write (at least one)."""
    left = max(max_tokens - i - 1, 0)
    if slack is not None:
        left = min(left, max(resp_len - i - 1, 0) + slack)
    return left or 1


async def _small_rows(slm: LogitModel, prompt: list[int], answer: list[int], k: int
                      ) -> list[tuple[Signals, int]]:
    """The small model's signals and top token at every position of ``answer`` (teacher-forced)."""
    rows = []
    for i in range(len(answer)):
        logits, hidden = await small_state(slm, prompt + answer[:i])
        s_tok = int(torch.argmax(logits))
        rows.append((signals_from_logits(logits, s_tok, k, hidden), s_tok))
    return rows


async def r2r_labels(examples: Sequence[Any], prompts: Sequence[list[int]], slm: LogitModel, llm: TokenModel, *,
                     outcome: Outcome, max_tokens: int, stop_ids: Sequence[int] = (), k: int = DEFAULT_K,
                     progress: bool = False, batch: int = 16, slack: int | None = None, label: str = "divergent"
                     ) -> list[R2RSample]:
    """Per-position samples for every example (see the module docstring); ``batch``: prompts per batched decode
    of a :class:`BatchGreedy` large model (1: one call per prompt). ``slack``: a continuation from position ``i``
    writes at most ``len(response) − i − 1 + slack`` tokens (within the budget; None: the whole budget), so an
    alternative that wanders off is judged on what it wrote by the length the large model's own answer took.
    ``label``: one of :data:`LABELS` (``outcome`` is not called for ``"different"``)."""
    _check_label(label)
    samples: list[R2RSample] = []
    stops = list(stop_ids)
    chunks = [list(range(j, min(j + batch, len(prompts)))) for j in range(0, len(prompts), max(batch, 1))]
    for chunk in _bar(chunks, progress, f"r2r labels ({max(batch, 1)} ex per step)"):
        resps = await greedy_many(llm, [list(prompts[i]) for i in chunk], [max_tokens] * len(chunk), stops, batch)
        for ex_i, resp in zip(chunk, resps, strict=True):
            ex, prompt = examples[ex_i], list(prompts[ex_i])
            rows = await _small_rows(slm, prompt, resp, k)
            if label == "different":
                samples += [R2RSample(sig, int(s_tok != resp[i]), ex_i, i) for i, (sig, s_tok) in enumerate(rows)]
                continue
            llm_outcome = outcome(ex, resp)
            diverge = [(i, s_tok) for i, (_, s_tok) in enumerate(rows) if s_tok != resp[i]]
            conts = await greedy_many(llm, [prompt + resp[:i] + [s_tok] for i, s_tok in diverge],
                                      [_cont_budget(max_tokens, len(resp), i, slack) for i, _ in diverge], stops,
                                      batch)
            label_at = {i: int(_branch(resp[:i], s_tok, cont, stops, ex, outcome) != llm_outcome)
                        for (i, s_tok), cont in zip(diverge, conts, strict=True)}
            samples += [R2RSample(sig, label_at.get(i, 0), ex_i, i) for i, (sig, _) in enumerate(rows)]
    return samples


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")


def _branch(prefix: list[int], token: int, cont: list[int], stops: Sequence[int], example: Any, outcome: Outcome
            ) -> Hashable:
    """The outcome of the answer ``prefix + [token]`` completed by ``cont`` (nothing after a stop token)."""
    return outcome(example, prefix + [token] + (cont if token not in stops else []))


async def r2r_labels_along(examples: Sequence[Any], prompts: Sequence[list[int]], answers: Sequence[list[int]],
                           slm: LogitModel, llm: LogitModel, *, outcome: Outcome, max_tokens: int,
                           stop_ids: Sequence[int] = (), k: int = DEFAULT_K, progress: bool = False, batch: int = 16,
                           slack: int | None = None, label: str = "divergent") -> list[R2RSample]:
    """Per-position samples along given answers, e.g. what R2R itself wrote with a router (on-policy, DAgger-style
    labels: the prefixes the router meets when it decides, not the large model's own). At each position where the
    small model's top token differs from the large model's (``llm``'s greedy token after the same prefix), the large
    model continues from both tokens and the position is divergent iff the two outcomes differ; other positions
    are 0. Along the large model's own greedy answers these are :func:`r2r_labels`' samples (its branch is the
    answer itself); ``slack`` counts from ``len(answer)``; ``label="different"``: every differing position is 1."""
    _check_label(label)
    samples: list[R2RSample] = []
    stops = list(stop_ids)
    for ex_i in _bar(range(len(prompts)), progress, "r2r labels along answers"):
        ex, prompt, answer = examples[ex_i], list(prompts[ex_i]), list(answers[ex_i])
        rows = await _small_rows(slm, prompt, answer, k)
        l_toks = [int(torch.argmax(llm.next_logits(prompt + answer[:i]))) for i in range(len(answer))]
        diverge = [(i, s_tok, l_tok) for i, ((_, s_tok), l_tok) in enumerate(zip(rows, l_toks, strict=True))
                   if s_tok != l_tok]
        if label == "different":
            differ = {i for i, _, _ in diverge}
            samples += [R2RSample(sig, int(i in differ), ex_i, i) for i, (sig, _) in enumerate(rows)]
            continue
        branches = [prompt + answer[:i] + [t] for i, s_tok, l_tok in diverge for t in (s_tok, l_tok)]
        budgets = [_cont_budget(max_tokens, len(answer), i, slack) for i, _, _ in diverge for _ in range(2)]
        conts = await greedy_many(llm, branches, budgets, stops, batch)
        label_at = {}
        for j, (i, s_tok, l_tok) in enumerate(diverge):
            small_out = _branch(answer[:i], s_tok, conts[2 * j], stops, ex, outcome)
            label_at[i] = int(small_out != _branch(answer[:i], l_tok, conts[2 * j + 1], stops, ex, outcome))
        samples += [R2RSample(sig, label_at.get(i, 0), ex_i, i) for i, (sig, _) in enumerate(rows)]
    return samples


@dataclass
class FusionSample:
    """One sequence's disagreement positions: ``positions[j]`` predicts ``ids[positions[j]]`` from the ids before."""

    ids: list[int]
    positions: list[int]
    targets: list[int]
    expert_logprobs: torch.Tensor  # [P, M, V]


async def fusion_examples(sequences: Sequence[tuple[list[int], list[int]]], experts: Sequence[LogitModel], *,
                          progress: bool = False, one_pass: bool = True) -> list[FusionSample]:
    """Teacher-forced expert log-probs at positions of the answers where the experts' argmaxes differ. With
    ``one_pass`` and experts that have ``forward_all`` (``SequenceScorer``s, e.g. ``collab.inproc.HFModel``), each
    expert reads each sequence once; otherwise one ``next_logits`` call per position (the reference the tests compare
    the one-pass path with)."""
    batched = one_pass and all(isinstance(e, SequenceScorer) for e in experts)
    out: list[FusionSample] = []
    for prompt, answer in _bar(sequences, progress, "fusion labels"):
        ids = list(prompt) + list(answer)
        if len(ids) == len(prompt):
            continue
        per = _answer_logprobs(experts, ids, len(prompt), batched)  # [A, M, V]
        tops = per.argmax(-1)
        mask = (tops != tops[:, :1]).any(-1)
        if bool(mask.any()):
            pos = [len(prompt) + int(j) for j in torch.nonzero(mask).flatten()]
            out.append(FusionSample(ids, pos, [ids[t] for t in pos], per[mask].contiguous()))
    return out


def _answer_logprobs(experts: Sequence[LogitModel], ids: list[int], start: int, batched: bool) -> torch.Tensor:
    """``[A, M, V]``: each expert's next-token log-probs at every answer position ``start … len(ids) − 1``."""
    if batched:
        x = torch.tensor([ids[:-1]])  # row t − 1 of the output predicts token t
        per = torch.stack([torch.log_softmax(cast(SequenceScorer, e).forward_all(x)[0][0].float().cpu(), -1)
                           for e in experts])
        return per[:, start - 1:].transpose(0, 1)
    return torch.stack([torch.stack([torch.log_softmax(e.next_logits(ids[:t]).float().cpu(), -1) for e in experts])
                        for t in range(start, len(ids))])


@dataclass
class StepSample:
    features: torch.Tensor
    advantage: float
    draft_score: float
    target_score: float
    example: int
    step: int


StepScore = Callable[[Any, list[str], str], float]
TextOutcome = Callable[[Any, str], float]


async def rollout_value(model: TokenModel, ids: list[int], example: Any, outcome: TextOutcome,
                        decode: Callable[[list[int]], str], answer_start: int, max_tokens: int,
                        stop_ids: Sequence[int] = ()) -> float:
    """``outcome`` of the answer ``ids[answer_start:]`` completed greedily by ``model`` (up to ``max_tokens`` more
    tokens, none if the answer already ended with a stop token)."""
    tail: list[int] = []
    if max_tokens > 0 and not (len(ids) > answer_start and ids[-1] in set(stop_ids)):
        tail = list((await model.complete_ids(list(ids), max_tokens, stop_ids=list(stop_ids))).token_ids)
    return float(outcome(example, decode(list(ids[answer_start:]) + tail)))


async def arbitrage_labels(examples: Sequence[Any], prompts: Sequence[list[int]], draft: TokenModel,
                           target: TokenModel, *, step_score: StepScore, decode: Callable[[list[int]], str],
                           delimiter: Sequence[int] | str, stop_ids: Sequence[int] = (), max_steps: int = 16,
                           max_step_tokens: int = 64, k: int = DEFAULT_K, progress: bool = False,
                           rollout: TokenModel | None = None, outcome: TextOutcome | None = None,
                           max_tokens: int = 0) -> list[StepSample]:
    """Per-step samples for every example (see the module docstring); ``max_tokens``: the answer budget that
    bounds a rollout."""
    if (rollout is None) != (outcome is None):
        raise ValueError("rollout and outcome go together")
    samples: list[StepSample] = []
    pairs = list(enumerate(zip(examples, prompts, strict=True)))
    for ex_i, (ex, prompt) in _bar(pairs, progress, "arbitrage labels"):
        rows, _ = await better_step_trajectory(ex_i, ex, prompt, draft, target, step_score=step_score,
                                               decode=decode, delimiter=delimiter, stop_ids=stop_ids,
                                               max_steps=max_steps, max_step_tokens=max_step_tokens, k=k,
                                               rollout=rollout, outcome=outcome, max_tokens=max_tokens)
        samples += rows
    return samples


async def better_step_trajectory(ex_i: int, ex: Any, prompt: list[int], draft: TokenModel, target: TokenModel, *,
                                 step_score: StepScore, decode: Callable[[list[int]], str],
                                 delimiter: Sequence[int] | str, stop_ids: Sequence[int] = (), max_steps: int = 16,
                                 max_step_tokens: int = 64, k: int = DEFAULT_K, rollout: TokenModel | None = None,
                                 outcome: TextOutcome | None = None, max_tokens: int = 0
                                 ) -> tuple[list[StepSample], Session]:
    """One example's answer where both models write each step from the same prefix and the better one (by
    ``step_score``, ties → draft) stands: its samples and the session that holds the answer and who wrote each
    token (the trajectory a router that knew each step's advantage would write)."""
    samples: list[StepSample] = []
    sess = Session({"draft": draft, "target": target}, prompt, stop_ids=stop_ids, decode=decode)
    steps: list[str] = []
    for s_i in range(max_steps):
        d = await write_step(sess, "draft", max_step_tokens, delimiter, k=k)
        t = await write_step(sess, "target", max_step_tokens, delimiter, k=k)
        sd = float(step_score(ex, list(steps), decode(d.tokens)))
        st = float(step_score(ex, list(steps), decode(t.tokens)))
        if rollout is not None and outcome is not None:
            left = max_tokens - len(sess.output)
            vals = [await rollout_value(rollout, sess.ids + w.tokens, ex, outcome, decode, len(prompt),
                                        left - len(w.tokens), stop_ids) for w in (d, t)]
            sd, st = max(sd, vals[0]), max(st, vals[1])
        feats = step_features(d.signals, step_index=s_i, ended_at_delimiter=d.ended_at_delimiter)
        samples.append(StepSample(feats, st - sd, sd, st, ex_i, s_i))
        best = t if st > sd else d
        if not best.tokens:
            break
        for tok in best.tokens:
            sess.append(tok, "target" if best is t else "draft")
        steps.append(decode(best.tokens))
        if sess.done:
            break
    return samples, sess
