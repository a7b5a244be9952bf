"""Training loops for the three routers, threshold selection, and ``tandem train r2r|fusionroute|arbitrage``.

- R2R: labels along the large model's own answers or, with ``--along ROUTER_FILE``, along what R2R writes with that
  router (:func:`r2r_answers`, on-policy); positives are divergent positions or, with ``--label different``, every
  position where the two models' top tokens differ, or, with ``--label oracle``, the positions where R2R's oracle
  hands the token to the large model, along the oracle's own answers (``collab.oracle``); BCE with the positive
  class weighted by ``#neg / #pos``; with ``--token-vectors`` the token table is a learned projection of the small
  model's input embeddings; τ is the largest threshold whose recall of positive positions on the validation split is
  ≥ the target (default 0.95) — :func:`choose_tau`.
- FusionRoute: on the experts' disagreement positions, the routing head learns (cross-entropy) the expert that gives
  the target token the highest probability, and the router model's logits learn next-token cross-entropy of
  ``log_softmax(log π_router + log π_I*)`` with ``I*`` that expert (complementary logits; experts frozen).
- Arbitrage: MSE regression of the advantage (validation: whole held-out examples); :func:`sweep_steps` reports, per
  threshold, the escalation rate and the mean step score, beside the RSD, oracle, draft-only and target-only
  baselines. Step scores are the suite's step checker or, by default, rollout-backed (``collab.labels``).

The command resolves models as HF folders, the real pair's names (``smollm2``: SmolLM2-135M-Instruct from its
package; ``smollm2-draft``: its distilled draft; ``evals.collab_defaults``) or zoo names (``evals.zoo.paths``), makes labels
from the models on the suite's train split (one suite, a comma list or ``mixed``), trains, calibrates τ and saves one
small file. The answer budget defaults to the suite's own (``evals.collab_defaults.suite_budget``). All loops are seeded and run a fixed number of epochs/steps. What it leaves out: the ``tandem`` parser wiring (the gateway's
``cli`` hands the words after ``train`` here) and evaluation (``evals.collab_eval``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from collab import labels
from collab.arbitrage import StepRouter
from collab.fusionroute import RoutingHead, save_fusionroute
from collab.inproc import HFModel
from collab.labels import FusionSample, R2RSample, StepSample
from collab.oracle import oracle_labels, r2r_oracle
from collab.r2r import R2RRouter, R2RStrategy
from collab.session import Session
from evals import collab_tasks as tasks
from evals.collab_defaults import REAL_MODELS, model_folder, suite_budget
from evals.metrics import recall_threshold
from evals.zoo.paths import model_dir as zoo_model_dir

# ---- pure helpers ------------------------------------------------------------------------------------------------


def choose_tau(probs: Sequence[float], labels: Sequence[int], recall: float = 0.95) -> float:
    """The largest τ with recall(p ≥ τ) ≥ ``recall`` over the positives (:func:`evals.metrics.recall_threshold`);
    1.0 (never route) if there are none."""
    tau = recall_threshold(probs, labels, recall)
    return 1.0 if math.isnan(tau) else tau


def positive_weight(labels: Sequence[int]) -> float:
    """``#negatives / #positives`` (1.0 when a class is missing)."""
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    return n_neg / n_pos if n_pos and n_neg else 1.0


def split(n: int, val_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded shuffle of ``range(n)`` into (train, validation) indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(n * val_frac)) if n > 1 else 0
    return order[n_val:], order[:n_val]


def sweep_steps(pred: Sequence[float], draft: Sequence[float], target: Sequence[float], taus: Sequence[float]
                ) -> list[dict[str, float]]:
    """Per τ: share of steps escalated (pred ≥ τ) and the mean score of the steps that stand."""
    out = []
    for tau in taus:
        esc = [p >= tau for p in pred]
        score = [t if e else d for e, d, t in zip(esc, draft, target, strict=True)]
        out.append({"tau": float(tau), "escalation": sum(esc) / max(len(esc), 1),
                    "score": sum(score) / max(len(score), 1)})
    return out


def baselines(draft: Sequence[float], target: Sequence[float], deltas: Sequence[float] = (0.5,)
              ) -> dict[str, Any]:
    """Mean step score of draft-only, target-only, the oracle, and RSD at each δ (with its escalation rate)."""
    n = max(len(draft), 1)
    rsd = []
    for delta in deltas:
        esc = [d < delta for d in draft]
        rsd.append({"delta": delta, "escalation": sum(esc) / n,
                    "score": sum(t if e else d for e, d, t in zip(esc, draft, target, strict=True)) / n})
    return {"draft": sum(draft) / n, "target": sum(target) / n,
            "oracle": sum(max(d, t) for d, t in zip(draft, target, strict=True)) / n, "rsd": rsd}


# ---- R2R --------------------------------------------------------------------------------------------------------


def train_r2r(samples: Sequence[R2RSample], vocab_size: int, *, hidden_size: int = 0, epochs: int = 30,
              lr: float = 3e-3, batch: int = 256, val_frac: float = 0.2, recall: float = 0.95, seed: int = 0,
              token_vectors: torch.Tensor | None = None, entropy: str = "signals"
              ) -> tuple[R2RRouter, float, dict[str, Any]]:
    """Train an :class:`R2RRouter`; returns it, τ and metrics (validation recall / routed share at τ).

    ``token_vectors`` ``[V, D]`` (e.g. the small model's input embeddings): the router's token table is then a
    learned projection of these fixed vectors, ``E @ W``, written into the table at the end (the saved router is the
    same kind of file). A token seen in no label still gets a row near those of similar tokens, where a free table
    keeps its random start (the held-out facts are exactly such tokens). ``entropy``: the router's entropy feature
    (:class:`collab.r2r.R2RRouter`; ``"topk"`` reads the same in process and over a server)."""
    torch.manual_seed(seed)
    k = samples[0].signals.top.numel()
    router = R2RRouter(vocab_size, k=k, hidden_size=hidden_size, entropy=entropy)
    proj = None
    if token_vectors is not None:
        vectors = token_vectors.detach().float()
        vectors = vectors / vectors.norm(dim=-1).mean()  # unit mean row norm, so W's start is like the table's
        if vectors.shape[0] != vocab_size:
            raise ValueError(f"token_vectors has {vectors.shape[0]} rows for a vocabulary of {vocab_size}")
        proj = nn.Linear(vectors.shape[1], router.config["token_dim"], bias=False)
        router.tok.weight.requires_grad_(False)
    by_example = sorted({s.example for s in samples})
    tr_ex, va_ex = split(len(by_example), val_frac, seed)
    va_set = {by_example[i] for i in va_ex}
    train = [s for s in samples if s.example not in va_set]
    val = [s for s in samples if s.example in va_set] or list(samples)
    labels = torch.tensor([float(s.label) for s in train])
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(positive_weight(labels.tolist())))
    params = [q for q in router.parameters() if q.requires_grad] + (list(proj.parameters()) if proj else [])
    opt = torch.optim.AdamW(params, lr=lr)
    dense, toks, hid = router.batch([s.signals for s in train])
    g = torch.Generator().manual_seed(seed)
    router.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=g).split(batch):
            emb = proj(vectors[toks[idx]]) if proj is not None else None
            loss = loss_fn(router(dense[idx], toks[idx], hid[idx] if hid is not None else None, token_emb=emb),
                           labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    router.eval()
    if proj is not None:
        with torch.no_grad():
            router.tok.weight.copy_(proj(vectors))
        router.tok.weight.requires_grad_(True)
    probs = router.probs([s.signals for s in val])
    yv = [s.label for s in val]
    tau = choose_tau(probs, yv, recall)
    flagged = [p >= tau for p in probs]
    n_pos = sum(yv)
    metrics = {"train_positions": len(train), "val_positions": len(val), "val_positives": n_pos,
               "tau": tau, "val_recall": (sum(f and y for f, y in zip(flagged, yv, strict=True)) / n_pos
                                          if n_pos else None),
               "val_routed_share": sum(flagged) / max(len(flagged), 1),
               "train_positive_share": float(labels.mean()) if len(labels) else 0.0}
    return router, tau, metrics


async def r2r_answers(prompts: Sequence[list[int]], slm: HFModel, llm: HFModel, router_file: str | Path,
                      tau: float | None, max_tokens: int, stop_ids: Sequence[int], progress: bool = False
                      ) -> list[list[int]]:
    """What R2R writes in process for each prompt with the router in ``router_file`` (at ``tau``, default the
    file's), greedy: the answers :func:`collab.labels.r2r_labels_along` labels."""
    loaded = R2RStrategy.load_artifact(router_file)
    out = []
    for prompt in tqdm(prompts, desc="r2r answers", unit="ex", disable=not progress):
        strategy = R2RStrategy.from_loaded(loaded, slm=slm.name, llm=llm.name, **({} if tau is None else {"tau": tau}))
        session = Session({slm.name: slm, llm.name: llm}, prompt, stop_ids=stop_ids)
        out.append((await strategy.run(session, max_tokens)).output)
    return out


# ---- FusionRoute ------------------------------------------------------------------------------------------------


def train_fusionroute(router_lm: nn.Module, samples: Sequence[FusionSample], n_experts: int, *, epochs: int = 5,
                      lr: float = 1e-3, lm_lr: float = 1e-4, tune_lm: bool = True, seed: int = 0,
                      progress: bool = False) -> tuple[RoutingHead, dict[str, Any]]:
    """Train the routing head (and, if ``tune_lm``, the router model's weights) on the disagreement positions."""
    torch.manual_seed(seed)
    head = RoutingHead(int(router_lm.config.hidden_size), n_experts)
    params = [{"params": head.parameters(), "lr": lr}]
    if tune_lm:
        params.append({"params": router_lm.parameters(), "lr": lm_lr})
    opt = torch.optim.AdamW(params)
    g = torch.Generator().manual_seed(seed)
    first = last = None
    router_lm.train(tune_lm)
    for epoch in range(epochs):
        total, n = 0.0, 0
        order: Any = torch.randperm(len(samples), generator=g).tolist()
        if progress:
            from tqdm import tqdm

            order = tqdm(order, desc=f"fusionroute epoch {epoch + 1}/{epochs}", unit="seq")
        for i in order:
            s = samples[i]
            ids = torch.tensor([s.ids])
            with torch.set_grad_enabled(tune_lm):
                out = router_lm(input_ids=ids, use_cache=False, output_hidden_states=True)
            at = torch.tensor(s.positions) - 1  # the output at t-1 predicts token t
            logits_r = out.logits[0, at].float()
            hidden = out.hidden_states[-1][0, at].float()
            tgt = torch.tensor(s.targets)
            best = s.expert_logprobs[torch.arange(len(tgt)), :, tgt].argmax(-1)  # [P] expert favouring the target
            loss_head = nn.functional.cross_entropy(head(hidden), best)
            fused = torch.log_softmax(logits_r, -1) + s.expert_logprobs[torch.arange(len(tgt)), best]
            loss_lm = nn.functional.cross_entropy(fused, tgt) if tune_lm else torch.zeros(())
            loss = loss_head + loss_lm
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        mean = total / max(n, 1)
        first = mean if first is None else first
        last = mean
    router_lm.eval()
    head.eval()
    return head, {"positions": sum(len(s.positions) for s in samples), "first_epoch_loss": first,
                  "last_epoch_loss": last}


# ---- Arbitrage --------------------------------------------------------------------------------------------------


def train_arbitrage(samples: Sequence[StepSample], *, epochs: int = 200, lr: float = 3e-3, val_frac: float = 0.2,
                    seed: int = 0) -> tuple[StepRouter, dict[str, Any]]:
    """Regress the advantage; metrics hold the validation sweep over τ and the baselines."""
    torch.manual_seed(seed)
    router = StepRouter(samples[0].features.numel())
    by_example = sorted({s.example for s in samples})
    tr_ex, va_ex = split(len(by_example), val_frac, seed)
    va_set = {by_example[i] for i in va_ex}  # whole examples held out: their steps share a trajectory
    tr = [i for i, s in enumerate(samples) if s.example not in va_set]
    va = [i for i, s in enumerate(samples) if s.example in va_set] or tr
    tr = tr or va
    x = torch.stack([s.features for s in samples])
    y = torch.tensor([s.advantage for s in samples])
    opt = torch.optim.AdamW(router.parameters(), lr=lr)
    router.train()
    for _ in range(epochs):
        loss = nn.functional.mse_loss(router(x[tr]), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
    router.eval()
    with torch.no_grad():
        pred = router(x[va]).tolist()
    d = [samples[i].draft_score for i in va]
    t = [samples[i].target_score for i in va]
    taus = sorted(set([float("inf")] + [round(p, 6) for p in pred]))
    return router, {"val_steps": len(va), "sweep": sweep_steps(pred, d, t, taus), "baselines": baselines(d, t)}


# ---- CLI ----------------------------------------------------------------------------------------------------------


def choose_step_tau(sweep: Sequence[dict[str, float]], reference_score: float, tolerance: float = 0.0) -> float:
    """Arbitrage's τ: the sweep entry with the fewest escalations whose mean step score reaches
    ``reference_score − tolerance`` (e.g. RSD's); if none does, the best-scoring entry (fewest escalations on ties)."""
    if not sweep:
        return float("inf")
    ok = [e for e in sweep if e["score"] >= reference_score - tolerance - 1e-12]
    pool = ok or [e for e in sweep if e["score"] >= max(x["score"] for x in sweep) - 1e-12]
    best = min(pool, key=lambda e: (e["escalation"], -e["tau"]))
    return float(best["tau"])


def model_dir(name: str, zoo: str | Path | None = None, layers: str | Path | None = None) -> Path:
    """An HF folder given as a path, the real pair's model of that name (``evals.collab_defaults.model_folder``;
    ``layers``: the draft's layers file), else the zoo model of that name (``evals.zoo.paths.model_dir``)."""
    p = Path(name).expanduser()
    if (p / "config.json").is_file():
        return p
    if name in REAL_MODELS:
        try:
            return model_folder(name, layers=Path(layers) if layers else None)
        except FileNotFoundError as e:
            raise SystemExit(str(e)) from e
    d = zoo_model_dir(name, zoo)
    if not (d / "config.json").is_file():
        raise SystemExit(f"no model '{name}': not an HF folder and not in the zoo at {d.parent} "
                         f"(run `tandem zoo build` or pass --zoo DIR)")
    return d


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """The chat prompt (one user turn + generation prompt) as token ids."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def read_labels(path: str | Path, key: dict[str, Any]) -> list[R2RSample]:
    """The R2R label samples that ``--labels`` wrote, if they were made with the settings ``key``; else exit saying
    which setting differs (labels of other examples or models would train a router for something else)."""
    saved = torch.load(path, weights_only=False)
    if not isinstance(saved, dict) or "key" not in saved or "samples" not in saved:
        raise SystemExit(f"{path}: not a labels file of `tandem train r2r --labels`")
    made = {"label": "divergent", "split": "train"} | saved["key"]  # files from before --label / --split
    diff = {k: (made.get(k), key.get(k)) for k in made.keys() | key.keys() if made.get(k) != key.get(k)}
    if diff:
        raise SystemExit(f"{path} was labelled with other settings (file, this command): {diff}; "
                         "pass another --labels file or the same settings")
    return list(saved["samples"])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tandem train", description="train a token-level collaboration router from the "
                                 "models themselves")
    ap.add_argument("strategy", choices=["r2r", "fusionroute", "arbitrage"])
    ap.add_argument("--slm", required=True, help="small / draft / FusionRoute router model: zoo name or HF folder")
    ap.add_argument("--llm", help="large / target model: zoo name or HF folder (r2r, arbitrage)")
    ap.add_argument("--experts", help="FusionRoute experts, comma-separated zoo names or folders")
    ap.add_argument("--suite", required=True, help="suite name, a comma list, or 'mixed'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--zoo", help="zoo folder (default: $TANDEM_ZOO_DIR or the packaged zoo)")
    ap.add_argument("--draft-layers", help="the draft's trained layers file for --slm smollm2-draft (default: "
                    "evals/zoo/models/smollm2-draft/layers.safetensors)")
    ap.add_argument("--limit", type=int, default=200, help="training examples")
    ap.add_argument("--skip", type=int, default=0, help="start after the first SKIP examples of the split (e.g. the "
                    "prompts a distilled draft was trained on: its agreement there overstates it)")
    ap.add_argument("--split", choices=("train", "validation"), default="train", help="the suite split the "
                    "examples come from (validation: held-out facts like the test split's, after --skip of them, "
                    "which a validation sweep of the first N does not reach when SKIP ≥ N)")
    ap.add_argument("--labels", help="R2R: a file of the label samples: read if it exists (its settings must match "
                    "this command's), else made and written there, so a router can be retrained without relabelling")
    ap.add_argument("--max-tokens", type=int, help="answer budget (default: from the suite's longest answer)")
    ap.add_argument("--delimiter", help="Arbitrage step delimiter (default: the suite's)")
    ap.add_argument("--max-steps", type=int, default=16, help="Arbitrage: steps per example at most")
    ap.add_argument("--max-step-tokens", type=int, default=64, help="Arbitrage: tokens per step at most")
    ap.add_argument("--step-score", choices=["rollout", "checker"], default="rollout", help="Arbitrage: a step's score "
                    "for the labels: the suite's step checker, or (rollout) the better of it and the final check of "
                    "the target's greedy completion after the step")
    ap.add_argument("--recall", type=float, default=0.95, help="R2R: recall of divergent positions that sets τ")
    ap.add_argument("--batch", type=int, default=16, help="R2R: prompts per batched greedy decode of the large "
                    "model while labelling (1: one call per prompt; same labels)")
    ap.add_argument("--cont-slack", type=int, help="R2R: a label's continuation writes at most as many tokens as "
                    "the large model's own answer had left, plus this (default: the whole answer budget)")
    ap.add_argument("--along", metavar="ROUTER_FILE", help="R2R: label along the answers R2R writes with this "
                    "router (on-policy, DAgger-style; collab.labels.r2r_labels_along) instead of the large model's")
    ap.add_argument("--along-tau", type=float, help="R2R: the threshold of the --along router (default: its file's)")
    ap.add_argument("--label", choices=(*labels.LABELS, "oracle"), default="divergent", help="R2R: what a positive "
                    "label is: a position where the large model's continuation changes the checker's verdict "
                    "(divergent), every position where the two models' top tokens differ (different: no "
                    "continuations, so labels cost one large-model answer per example), or where R2R's oracle "
                    "hands the token to the large model, along the oracle's answers (oracle; collab.oracle)")
    ap.add_argument("--token-vectors", action="store_true", help="R2R: learn the router's token table as a "
                    "projection of the small model's input embeddings (tokens no label saw, such as held-out facts, "
                    "get rows near similar tokens') instead of a free table")
    ap.add_argument("--topk-entropy", action="store_true", help="R2R: the router's entropy feature from the small "
                    "model's top-k logprobs alone, as a server's top-k logprobs give it (default: the exact entropy "
                    "in process, a lower bound over a server)")
    ap.add_argument("--hidden", action="store_true", help="R2R: also feed the SLM's hidden state (an in-process "
                    "small model only: a vLLM server gives no hidden state, and the gateway refuses such a route)")
    ap.add_argument("--epochs", type=int, help="training epochs (default per strategy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``train r2r|fusionroute|arbitrage --slm S [--llm L | --experts A,B] --suite NAME --out FILE [--limit N]``."""
    args = parser().parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.strategy != "fusionroute" and not args.llm:
        raise SystemExit(f"tandem train {args.strategy}: --llm is required")
    if args.strategy == "fusionroute" and not (args.experts or args.llm):
        raise SystemExit("tandem train fusionroute: --experts is required")
    examples = tasks.task_examples(args.suite, args.split, args.skip + args.limit)[args.skip:]
    slm = HFModel(Path(args.slm).name, model_dir(args.slm, args.zoo, args.draft_layers))
    tok = slm.tokenizer
    prompts = [prompt_ids(tok, ex.prompt) for ex in examples]
    stop = sorted(slm.eos_ids)
    show = not args.quiet
    if args.max_tokens is None:
        args.max_tokens = suite_budget(args.suite)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    common = {"slm": args.slm, "suite": args.suite, "split": args.split, "limit": args.limit, "skip": args.skip,
              "seed": args.seed}
    if args.strategy == "r2r":
        if args.label == "oracle" and args.along:
            raise SystemExit("tandem train r2r: --label oracle labels along the oracle's own answers; drop --along")
        label_key = {"slm": args.slm, "llm": args.llm, "suite": args.suite, "split": args.split, "skip": args.skip,
                     "limit": args.limit, "max_tokens": args.max_tokens, "cont_slack": args.cont_slack, "label": args.label}
        if args.along:
            label_key |= {"along": str(args.along), "along_tau": args.along_tau}
        samples = read_labels(args.labels, label_key) if args.labels and Path(args.labels).is_file() else None
        if samples is None:
            llm = HFModel(Path(args.llm).name, model_dir(args.llm, args.zoo, args.draft_layers))
            how = {"outcome": lambda ex, ids: tasks.check(ex, decode(ids)), "max_tokens": args.max_tokens,
                   "stop_ids": stop, "progress": show, "batch": args.batch, "slack": args.cont_slack,
                   "label": args.label}
            if args.label == "oracle":
                found = asyncio.run(r2r_oracle(prompts, slm, llm, max_tokens=args.max_tokens, stop_ids=stop,
                                               score=lambda i, ids: tasks.check(examples[i], decode(ids)),
                                               batch=args.batch, progress=show))
                samples = oracle_labels(found)
            elif args.along:
                answers = asyncio.run(r2r_answers(prompts, slm, llm, args.along, args.along_tau, args.max_tokens,
                                                  stop, show))
                samples = asyncio.run(labels.r2r_labels_along(examples, prompts, answers, slm, llm, **how))
            else:
                samples = asyncio.run(labels.r2r_labels(examples, prompts, slm, llm, **how))
            if args.labels:
                torch.save({"key": label_key, "samples": samples}, args.labels)
        vectors = slm.model.get_input_embeddings().weight if args.token_vectors else None
        router, tau, metrics = train_r2r(samples, slm.vocab_size, hidden_size=slm.hidden_size if args.hidden else 0,
                                         epochs=args.epochs or 30, recall=args.recall, seed=args.seed,
                                         token_vectors=vectors, entropy="topk" if args.topk_entropy else "signals")
        router.save(args.out, tau=tau, metrics=metrics, llm=args.llm, label=args.label,
                    token_vectors=args.token_vectors, **common)
    elif args.strategy == "fusionroute":
        names = (args.experts or args.llm).split(",")
        experts = [HFModel(Path(n).name, model_dir(n, args.zoo, args.draft_layers)) for n in names]
        seqs = [(p, tok(ex.answer, add_special_tokens=False)["input_ids"] + stop[:1])
                for p, ex in zip(prompts, examples, strict=True)]
        samples_f = asyncio.run(labels.fusion_examples(seqs, experts, progress=show))
        if not samples_f:
            raise SystemExit("the experts never disagree on these examples: nothing to train on")
        head, metrics = train_fusionroute(slm.model, samples_f, len(experts), epochs=args.epochs or 3,
                                          seed=args.seed, progress=show)
        save_fusionroute(args.out, head, [Path(n).name for n in names], slm.model.state_dict(),
                         router_config=slm.model.config.to_dict(), dtype=torch.bfloat16, metrics=metrics,
                         router=Path(args.slm).name, **common)
    else:
        llm = HFModel(Path(args.llm).name, model_dir(args.llm, args.zoo, args.draft_layers))
        delim = args.delimiter if args.delimiter is not None else tasks.step_delimiter(args.suite)
        samples_a = asyncio.run(labels.arbitrage_labels(
            examples, prompts, slm, llm,
            step_score=lambda ex, pre, st: tasks.check_step(ex, [tasks.clean_step(p) for p in pre],
                                                            tasks.clean_step(st)),
            decode=decode, delimiter=delim, stop_ids=stop, max_steps=args.max_steps,
            max_step_tokens=args.max_step_tokens, progress=show,
            **({"rollout": llm, "outcome": tasks.check, "max_tokens": args.max_tokens}
               if args.step_score == "rollout" else {})))
        if not samples_a:
            raise SystemExit("no steps were written: nothing to train on")
        router_a, metrics = train_arbitrage(samples_a, epochs=args.epochs or 200, seed=args.seed)
        rsd = metrics["baselines"]["rsd"][0]["score"]
        tau_a = choose_step_tau(metrics["sweep"], rsd)
        metrics["tau"] = tau_a
        metrics["chosen"] = next(e for e in metrics["sweep"] if e["tau"] == tau_a)
        router_a.save(args.out, tau=tau_a, metrics=metrics, llm=args.llm, delimiter=delim, step_score=args.step_score,
                      **common)
    summary = {k: v for k, v in metrics.items() if k != "sweep"}
    print(json.dumps({"out": args.out, "bytes": Path(args.out).stat().st_size, **summary}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
