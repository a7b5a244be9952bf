"""``tandem zoo``: build the model zoo or measure it.

- ``tandem zoo build [--out DIR] [--steps N] [--scale X] [--only a,b] [--jobs N]`` trains the zoo's models (all, or
  the named ones) by step count into DIR (default: the packaged ``evals/zoo/models``), N at once (default: the CPU
  count, at most 2), and writes ``zoo.json``.
- ``tandem zoo build --only smollm2-draft [--steps N] [--train-n N]`` distils the real pair's draft (SmolLM2's
  first layers, :mod:`evals.zoo.smol_draft`) into ``DIR/smollm2-draft``; a build without ``--only`` leaves it out.
- ``tandem zoo eval [--zoo DIR] [--n N] [--only a,b] [--suites s,t] [--max-new N] [--json]`` prints accuracy per
  model per suite on the test split (a Markdown table, then the requirements check); with ``--json`` the last line is
  ``{"models": {"small": {"arithmetic": 0.41, ...}, ...}}``.

What it leaves out: the gateway's own ``tandem`` parser (it hands the words after ``zoo`` to :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evals.zoo.paths import MANIFEST, zoo_dir
from evals.zoo.smol_draft import DRAFT_NAME
from evals.zoo.spec import SUITES, ZOO_SPECS, flops_per_token


def _names(text: str | None) -> list[str] | None:
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem zoo", description="build or evaluate the model zoo")
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="train the zoo models by step count")
    b.add_argument("--out", type=Path, help="output folder (default: the packaged zoo)")
    b.add_argument("--steps", type=int, help="train every model for exactly N steps (smoke builds)")
    b.add_argument("--scale", type=float, default=1.0, help="multiply every spec's step count")
    b.add_argument("--only", help="comma-separated model names")
    b.add_argument("--train-n", type=int, help="use only the first N train examples per suite")
    b.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="models trained at once, one process and one thread each (default: CPUs, at most 2); "
                   "smollm2-draft: teacher processes, then torch threads for its training")
    b.add_argument("--draft-spec", action="append", default=[], metavar="KEY=VALUE",
                   help="smollm2-draft: override a field of evals.zoo.smol_draft.DraftSpec (layers, english_train, "
                   "steps_train, lr, ...; repeatable); recorded in draft.json")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    e = sub.add_parser("eval", help="accuracy per model per suite on the test split")
    e.add_argument("--zoo", type=Path, help="zoo folder (default: the packaged zoo)")
    e.add_argument("--n", type=int, help="test examples per suite (default: all)")
    e.add_argument("--only", help="comma-separated model names")
    e.add_argument("--suites", help=f"comma-separated suites (default: {','.join(SUITES)})")
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--max-new", type=int, help="cap on generated tokens per answer (default: per suite)")
    e.add_argument("--json", action="store_true", help="end with one JSON line of accuracies")
    e.add_argument("--models", help="real models instead of the zoo: smollm2, smollm2-draft, smollm2-2layers "
                   "(default suites then: english,english-steps; --n defaults to 100)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _flops(zoo: Path) -> dict[str, int]:
    path = zoo / MANIFEST
    if path.exists():
        return {m["name"]: int(m["flops_per_token"]) for m in json.loads(path.read_text())["models"]}
    return {s.name: flops_per_token(s) for s in ZOO_SPECS}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.action == "build":
        from evals.zoo.build import build

        out = args.out or zoo_dir()
        only = _names(args.only)
        if only and DRAFT_NAME in only:  # the real pair's draft: built only when named (evals.zoo.smol_draft)
            only = [n for n in only if n != DRAFT_NAME]
            _build_draft(args, out)
            if not only:
                return 0
        try:
            manifest = build(out, steps=args.steps, steps_scale=args.scale, only=only,
                             train_n=args.train_n, progress=not args.quiet, jobs=max(1, args.jobs),
                             log=lambda m: print(m, file=sys.stderr, flush=True))
        except KeyError as e:
            print(f"tandem zoo build: {e.args[0]}", file=sys.stderr)
            return 2
        print(f"built {len(manifest['models'])} model(s) into {out} "
              f"({manifest['total_bytes'] / 1e6:.1f} MB, {manifest['build_seconds']:.0f}s)")
        return 0

    if args.models:
        return _eval_real(args)
    from evals.zoo.build import default_get_suite
    from evals.zoo.evaluate import check_criteria, evaluate_zoo, format_table

    zoo = args.zoo or zoo_dir()
    if not (zoo / MANIFEST).exists() and not any((p / "config.json").exists() for p in zoo.glob("*")):
        print(f"tandem zoo eval: no zoo models in {zoo} (run `tandem zoo build`)", file=sys.stderr)
        return 2
    suites = _names(args.suites) or list(SUITES)
    result = evaluate_zoo(zoo, suites=suites, get_suite=default_get_suite, n=args.n, only=_names(args.only),
                          batch=args.batch, max_new_tokens=args.max_new, progress=not args.quiet)
    flops = _flops(zoo)
    print(format_table(result["models"], flops, suites))
    for statement, holds in check_criteria(result["models"], flops, suites=suites):
        print(f"[{'ok' if holds else 'NO'}] {statement}")
    if args.json:
        print(json.dumps(result))
    return 0


def _build_draft(args: argparse.Namespace, out: Path) -> None:
    """``tandem zoo build --only smollm2-draft``: distil SmolLM2's first layers into ``out/smollm2-draft``."""
    from evals.zoo.smol_draft import build_draft, spec_with

    try:
        spec = spec_with(args.draft_spec)
    except ValueError as e:
        raise SystemExit(f"tandem zoo build: --draft-spec: {e}") from None
    meta = build_draft(out / DRAFT_NAME, spec=spec, steps=args.steps, train_n=args.train_n, progress=not args.quiet,
                       jobs=max(1, args.jobs), threads=max(1, args.jobs),
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    agree = meta["agreement_validation"]
    print(f"built {DRAFT_NAME} into {out / DRAFT_NAME} ({meta['layers']} layers, {meta['steps']} steps, "
          f"{meta['layers_bytes'] / 1e6:.1f} MB, {meta['seconds']['total']:.0f}s; validation top-1 agreement with "
          f"SmolLM2 {agree['before']:.3f} -> {agree['after']:.3f})")


def _eval_real(args: argparse.Namespace) -> int:
    """``tandem zoo eval --models ...``: the real pair on the English suites (:mod:`evals.zoo.real_pair_eval`)."""
    from evals.suites import get_suite
    from evals.zoo.real_pair_eval import REAL_SUITES, evaluate_real

    suites = _names(args.suites) or list(REAL_SUITES)
    try:
        result = evaluate_real(_names(args.models) or [], suites, get_suite, n=args.n or 100,
                               batch=min(args.batch, 16), max_new_tokens=args.max_new)
    except (KeyError, FileNotFoundError) as e:
        print(f"tandem zoo eval: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print("| model | " + " | ".join(suites) + " |\n|---|" + "---:|" * len(suites))
    for name, per in result["models"].items():
        print(f"| {name} | " + " | ".join(f"{100 * per[s]:.1f}" for s in suites) + " |")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
