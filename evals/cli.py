"""Command line of live evals and reports: ``tandem eval live``, ``tandem eval demo`` and ``tandem report``.

``main(argv)`` takes the words after ``tandem`` (``eval live …``, ``eval demo …``, ``report RUN --out DIR``) or after
``tandem eval`` (``live …``, ``demo …``); ``report_main(argv)`` takes the words after ``tandem report``.

- ``live --gateway URL --routes a,b --suite NAME[,NAME] [--n N] [--split S] [--run-id ID] [--concurrency C]
  [--out DIR] [--max-tokens T]`` runs ``evals.live.run_live`` (resumes when the run id exists) and prints a summary.
- ``demo [--config FILE] [--suite NAME] [--n N] [--routes a,b] [--out DIR]`` starts ``tandem serve`` (the embedded
  default config, or FILE) on a free loopback port with its database in the run folder, evaluates every route it
  serves (or ``--routes``), writes the report, and stops the gateway.
- ``report RUN --out DIR [--from-log DB_URL]`` writes ``report.html`` and ``summary.md`` from a run folder (or a run
  id under ``~/.tandem/runs``), or from the request log rows tagged with the run id.

What it leaves out: replay (``evals.replay``) and the zoo (``evals.zoo.cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path

__all__ = ["main", "report_main"]

RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _items(suites: str, split: str | None, n: int | None) -> list:
    from evals.datasets import default_split, get_dataset

    out = []
    for name in [s for s in suites.split(",") if s]:
        out += get_dataset(name).items(split or default_split(name), n)
    return out


def _run_id(arg: str | None, suite: str) -> str:
    rid = arg or f"{suite.replace(',', '.')}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not RUN_ID.match(rid):
        raise SystemExit(f"run id must be 1-64 characters of [A-Za-z0-9_.:-], got {rid!r}")
    return rid


def _print_summary(summary: object, run_dir: Path) -> None:
    from evals.report import fmt_money, fmt_pct, summarize
    from evals.run_store import load_run

    print(f"{summary}")
    s = summarize(load_run(run_dir), n_boot=200)
    for r in s.routes:
        print(f"  {r.route:30s} acc {fmt_pct(r.accuracy):>7s}  $/1k req {fmt_money(r.cost_per_1k):>10s}  "
              f"cost-of-pass {fmt_money(r.cost_of_pass):>10s}  n={r.n} errors={r.errors}")


def cmd_live(args: argparse.Namespace) -> int:
    from evals.live import run_live

    routes = [r for r in args.routes.split(",") if r]
    items = _items(args.suite, args.split, args.n)
    run_id = _run_id(args.run_id, args.suite)
    out = Path(args.out).expanduser()
    summary = asyncio.run(run_live(args.gateway, routes, items, run_id, out, args.concurrency, args.api_key,
                                   max_tokens=args.max_tokens, temperature=args.temperature,
                                   meta={"split": args.split}))
    _print_summary(summary, out / run_id)
    print(f"results: {out / run_id / 'results.jsonl'}\nreport:  tandem report {out / run_id} --out "
          f"{out / run_id / 'report'}")
    return 0 if summary.failed == 0 else 1


def distinct_routes(models: list[dict]) -> list[str]:
    """Route ids from ``/v1/models``, keeping one plain route per backend (a backend is also a route of its name)."""
    out, seen = [], set()
    for m in sorted(models, key=lambda m: m.get("kind") == "backend" and m.get("id") == m.get("backend")):
        key = (m.get("kind"), m.get("backend")) if m.get("kind") == "backend" else ("", m["id"])
        if key not in seen:
            seen.add(key)
            out.append(m["id"])
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    import httpx

    from evals.gateway_process import start_gateway
    from evals.live import run_live
    from evals.report import write_report
    from evals.run_store import load_run
    from gateway.config import default_config, load_config

    cfg = (load_config(args.config) if args.config else default_config()).model_dump(mode="json", exclude_none=True)
    run_id = _run_id(args.run_id, f"demo-{args.suite}")
    out = Path(args.out).expanduser()
    run_dir = out / run_id
    print(f"starting the gateway ({args.config or 'embedded default config'}) ...", flush=True)
    # The demo logs to its own database (so the run can be rebuilt from its log) and needs no Redis.
    cfg["storage"] = {**(cfg.get("storage") or {}), "database_url": f"sqlite:///{run_dir / 'gateway' / 'tandem.db'}",
                      "spool_dir": str(run_dir / "gateway" / "spool")}
    cfg["storage"].pop("redis_url", None)
    gw = start_gateway(cfg, run_dir / "gateway", timeout=600)
    url = gw.url
    try:
        routes = [r for r in (args.routes or "").split(",") if r]
        if not routes:
            routes = distinct_routes(httpx.get(url + "/models", timeout=10).json()["data"])
        items = _items(args.suite, None, args.n)
        print(f"evaluating {len(routes)} routes × {len(items)} items: {', '.join(routes)}", flush=True)
        summary = asyncio.run(run_live(url, routes, items, run_id, out, args.concurrency, max_tokens=args.max_tokens,
                                       meta={"demo": True, "config": args.config or "default"}))
    finally:
        gw.stop()
    html, md = write_report(load_run(run_dir), run_dir / "report")
    _print_summary(summary, run_dir)
    print(f"report: {html}\nsummary: {md}")
    return 0 if summary.failed == 0 else 1


def report_main(argv: list[str] | None = None) -> int:
    """``tandem report RUN --out DIR [--from-log DB_URL]``."""
    p = argparse.ArgumentParser(prog="tandem report", description="write report.html and summary.md for a run")
    p.add_argument("run", help="run folder, or a run id under $TANDEM_RUNS_DIR (default ~/.tandem/runs)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--from-log", metavar="DB_URL", help="read the run from the gateway's request log (eval_run id)")
    args = p.parse_args(argv)
    from evals.report import write_report
    from evals.run_store import load_run, load_run_from_log, read_meta, resolve_run_dir

    if args.from_log:
        run = load_run_from_log(args.from_log, Path(args.run).name)
        try:
            run.meta = read_meta(resolve_run_dir(args.run))
        except FileNotFoundError:
            run.meta = {"run_id": run.run_id, "suite": "(from request log)"}
    else:
        try:
            run = load_run(args.run)
        except FileNotFoundError as e:
            print(f"tandem report: {e}", file=sys.stderr)
            return 2
    html, md = write_report(run, args.out)
    print(f"{html}\n{md}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem eval", description="live evals through the gateway")
    sub = p.add_subparsers(dest="cmd", required=True)
    default_out = os.environ.get("TANDEM_RUNS_DIR", "~/.tandem/runs")

    live = sub.add_parser("live", help="run routes on a suite through a running gateway")
    live.add_argument("--gateway", required=True, help="gateway URL including /v1")
    live.add_argument("--routes", required=True, help="comma-separated route names")
    live.add_argument("--suite", required=True, help="gsm8k, spider, or a zoo suite; comma-separated for several")
    live.add_argument("--split", help="split (default: test; spider: dev)")
    live.add_argument("--n", type=int, help="items per suite (default: all)")
    live.add_argument("--run-id", help="run id (default: SUITE-TIMESTAMP); an existing run resumes")
    live.add_argument("--concurrency", type=int, default=4)
    live.add_argument("--out", default=default_out, help="runs folder")
    live.add_argument("--max-tokens", type=int, default=256)
    live.add_argument("--temperature", type=float, default=0.0)
    live.add_argument("--api-key", default=None, help="gateway key (default: $TANDEM_API_KEY)")
    live.set_defaults(func=cmd_live)

    demo = sub.add_parser("demo", help="start a gateway, run a small eval of its routes, write the report")
    demo.add_argument("--config", help="gateway YAML (default: the embedded default)")
    demo.add_argument("--suite", default="arithmetic")
    demo.add_argument("--n", type=int, default=8)
    demo.add_argument("--routes", help="comma-separated routes (default: every route the gateway serves)")
    demo.add_argument("--run-id")
    demo.add_argument("--concurrency", type=int, default=2)
    demo.add_argument("--max-tokens", type=int, default=96)
    demo.add_argument("--out", default=default_out, help="runs folder")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        argv = argv[1:]
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
