"""``tandem eval oracle``: how far the best router could go with a pair — R2R's and Arbitrage's ceilings, measured.

A router sees only the small model; these oracles see the large model's answers and the checker too, so what they
reach is what a router of that strategy that made no mistakes would reach with the same two models (greedily: one
decision per position or step, no search over later ones) — the mark its router is measured against.

- **R2R** (``collab.oracle.r2r_oracle``): where the small model's top token differs from the large model's plan, the
  large model continues after it and the checker decides whether it stands; the large model's share of answer tokens
  is then the fewest hand-overs by which a router keeps the large model's accuracy (:func:`r2r_summary` pools it).
- **Arbitrage** (:func:`arbitrage_oracle`): both models write each step from the same prefix, the suite's step
  checker scores both and the better (ties → draft) stands — the trajectory of ``collab.labels.arbitrage_labels``,
  i.e. a router that knew each step's advantage. Its target-step share is the fewest target steps at that accuracy.

``tandem eval oracle --strategy r2r|arbitrage [--suite S] [--split test] [--n N] [--json]`` runs either on the pair
and suite ``tandem eval collab`` would use (``evals.collab_defaults``), in process. With ``--separability`` (R2R) it
also ranks the oracle's hand-overs by a router's signals (``evals.oracle_separability``): how many positions a
threshold must route to catch 80 / 90 / 95 % of them, beside the oracle's own share. What it leaves out: speed (an
oracle runs the large model at every position; ``tandem eval collab`` measures the routers), sampling, and routers
that look ahead more than one continuation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from collab.inproc import HFModel
from collab.labels import better_step_trajectory
from collab.oracle import OracleAnswer, r2r_oracle
from collab.protocol import TokenModel
from collab.r2r import R2RStrategy
from evals import collab_tasks as tasks
from evals.collab_defaults import DEFAULT_SUITE, default_artifact, default_pair, suite_budget
from evals.collab_train import model_dir, prompt_ids
from evals.oracle_separability import separability


def r2r_summary(answers: Sequence[OracleAnswer], stop_ids: Sequence[int] = ()) -> dict[str, Any]:
    """Accuracy (oracle and large model alone) and the large model's share of answer tokens (stop tokens not
    counted, pooled over items as ``tandem eval collab`` pools them)."""
    stops = set(stop_ids)
    written = [w for a in answers for t, w in zip(a.ids, a.writers, strict=True) if t not in stops]
    n = max(len(answers), 1)
    return {"n": len(answers), "accuracy": sum(a.score for a in answers) / n,
            "large_accuracy": sum(a.large_score for a in answers) / n,
            "large_token_share": written.count("large") / len(written) if written else 0.0,
            "tokens": len(written), "continuations": sum(a.continuations for a in answers)}


async def arbitrage_oracle(examples: Sequence[Any], prompts: Sequence[list[int]], draft: TokenModel,
                           target: TokenModel, *, step_score: Callable[[Any, list[str], str], float],
                           outcome: Callable[[Any, str], float], decode: Callable[[list[int]], str], delimiter: str,
                           stop_ids: Sequence[int] = (), max_steps: int = 16, max_step_tokens: int = 64,
                           progress: bool = False) -> dict[str, Any]:
    """The Arbitrage oracle over ``examples`` (see the module docstring): accuracy by ``outcome`` on the final
    text, the target's share of steps, and how many draft steps the step checker accepts (what RSD with the
    checker as its reward keeps)."""
    n_steps = target_steps = draft_ok = 0
    total = 0.0
    pairs = list(zip(examples, prompts, strict=True))
    for i, (ex, prompt) in enumerate(tqdm(pairs, desc="oracle", unit="ex", disable=not progress, file=sys.stderr)):
        rows, sess = await better_step_trajectory(i, ex, list(prompt), draft, target, step_score=step_score,
                                                  decode=decode, delimiter=delimiter, stop_ids=stop_ids,
                                                  max_steps=max_steps, max_step_tokens=max_step_tokens)
        n_steps += len(rows)
        target_steps += sum(r.target_score > r.draft_score for r in rows)
        draft_ok += sum(r.draft_score >= 0.5 for r in rows)
        total += float(outcome(ex, decode(sess.output)))
    n = max(len(examples), 1)
    return {"n": len(examples), "accuracy": total / n, "steps": n_steps,
            "large_step_share": target_steps / n_steps if n_steps else 0.0,
            "draft_steps_accepted": draft_ok / n_steps if n_steps else 0.0}


# ---- the command ------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem eval oracle", description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", choices=("r2r", "arbitrage"), default="r2r")
    p.add_argument("--suite", help="default: the strategy's (english for R2R, english-steps for Arbitrage)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--n", type=int, default=100, help="items (the split's first N)")
    p.add_argument("--slm", help="small / draft model (default: the suite's pair)")
    p.add_argument("--llm", help="large / target model (default: the suite's pair)")
    p.add_argument("--draft-layers", help="the draft's layers file (default: the committed one)")
    p.add_argument("--zoo", help="the char-level zoo's folder (zoo suites)")
    p.add_argument("--max-tokens", type=int, help="answer budget (default: the suite's)")
    p.add_argument("--batch", type=int, default=16, help="R2R: prompts per batched large-model decode")
    p.add_argument("--max-step-tokens", type=int, default=64, help="Arbitrage: tokens per step at most")
    p.add_argument("--separability", action="store_true", help="R2R: also rank the oracle's hand-overs by the router's "
                   "signals, the same kind of router refit on them out of fold, and the large model's margin")
    p.add_argument("--artifact", help="R2R --separability: the router file (default: the suite's committed one)")
    p.add_argument("--folds", type=int, default=5, help="R2R --separability: item folds of the refit router")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``tandem eval oracle …`` (see the module docstring)."""
    ap = parser()
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.separability and args.strategy != "r2r":
        ap.error("--separability ranks R2R's hand-overs; use it with --strategy r2r")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    suite = args.suite or DEFAULT_SUITE[args.strategy]
    slm_name, llm_name = default_pair(suite)
    slm_name, llm_name = args.slm or slm_name, args.llm or llm_name
    slm = HFModel(Path(slm_name).name, model_dir(slm_name, args.zoo, args.draft_layers))
    llm = HFModel(Path(llm_name).name, model_dir(llm_name, args.zoo, args.draft_layers))
    tok = slm.tokenizer
    examples = tasks.task_examples(suite, args.split, args.n)
    prompts = [prompt_ids(tok, ex.prompt) for ex in examples]
    stops = sorted(slm.eos_ids | llm.eos_ids)
    budget = args.max_tokens or suite_budget(suite)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    if args.strategy == "r2r":
        answers = asyncio.run(r2r_oracle(prompts, slm, llm, score=lambda i, ids: tasks.check(examples[i], decode(ids)),
                                         max_tokens=budget, stop_ids=stops, batch=args.batch,
                                         progress=not args.quiet))
        summary = r2r_summary(answers, stops)
        if args.separability:
            router, _ = R2RStrategy.load_artifact(args.artifact or default_artifact("r2r", suite))
            summary["separability"] = separability(answers, prompts, llm, router,
                                                   slm.model.get_input_embeddings().weight, folds=args.folds)
    else:
        summary = asyncio.run(arbitrage_oracle(examples, prompts, slm, llm, step_score=tasks.check_step,
                                               outcome=tasks.check, decode=decode,
                                               delimiter=tasks.step_delimiter(suite), stop_ids=stops,
                                               max_step_tokens=args.max_step_tokens, progress=not args.quiet))
    summary = {"strategy": args.strategy, "suite": suite, "split": args.split, "small": slm_name,
               "large": llm_name} | summary
    if args.json:
        print(json.dumps(summary))
        return 0
    sep = summary.pop("separability", None)
    for key, value in summary.items():
        print(f"{key:>22}: {value:.3f}" if isinstance(value, float) else f"{key:>22}: {value}")
    if sep is not None:
        print(f"{'positions':>22}: {sep['positions']} ({sep['hand_over_share']:.1%} hand-overs, "
              f"{sep['harmless_difference_share']:.1%} harmless differences)")
        for name, row in sep["scores"].items():
            print(f"{name:>22}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    return 0
