"""``tandem eval collab``: measure a token-level collaboration against its single models, through the gateway.

``tandem eval collab --strategy r2r|arbitrage|fusionroute [--suite T] [--n N] [--artifact FILE] [--zoo DIR] [--json]``
(defaults, ``evals.collab_defaults``: R2R and Arbitrage run the real pair — SmolLM2-135M-Instruct ``smollm2`` and its
draft ``smollm2-draft`` — on ``english`` / ``english-steps`` with ``collab/artifacts/r2r-english.pt`` /
``arbitrage-english.pt``; a zoo suite such as ``--suite sql`` runs the char-level zoo's ``small`` / ``large``)
writes a gateway config with one in-process backend per zoo model the strategy needs, the collaboration as a route of
kind ``collab`` (with its trained router file) and, for Arbitrage, the RSD baseline as a second collab route (step
checker as the PRM); every backend is a route of its own, so small-only, large-only (and each expert, and the router
model alone for FusionRoute) are measured in the same run. It starts ``tandem serve --config`` as a subprocess,
sends the suite's test examples through the official ``openai`` client (streaming, to read each piece's model), scores
the outputs with the suite checker and prints a table; with ``--json`` the last line is one JSON object.

Per route: accuracy; the large model's share of answer tokens and of answer steps (a step — one line — counts as the
large model's if it wrote any token of it; Arbitrage's "target steps"); average activated parameters per answer token
(:func:`collab.r2r.average_activated_params`, from the per-model usage the gateway reports); and tokens/s (answer
tokens over the wall time of the requests, one at a time, after one warm-up request per route). On a mix of suites
each route also gets its accuracy per domain and, for the collaboration, which model wrote its tokens in each domain
(``by_suite``; e.g. whether FusionRoute's head picks the domain's expert).

A router's curve: ``--thresholds 0,0.05,0.1`` adds one route ``<strategy>:τ`` per threshold (R2R or Arbitrage, the
router's τ overridden) and, for Arbitrage, ``--deltas`` one ``rsd:δ`` per RSD acceptance threshold; ``--split
validation`` runs the suite's validation split. Calibrate on validation — :func:`match_threshold`, printed and in the
JSON as ``matched``: Arbitrage's τ with the fewest target steps whose accuracy reaches RSD's, R2R's τ with the fewest
large-model tokens whose accuracy reaches the large model's, each less ``--match-tolerance`` — then run that τ on
test.

Targets are data the caller passes, none by default: ``--target 'collab.accuracy >= large.accuracy - 0.05'``
(repeatable) or ``--targets FILE`` (a YAML / JSON list of such texts). Each side is a number (``0.3`` or ``30%``) or
``[NUMBER *] ROUTE.METRIC [(+|-) NUMBER]``, ROUTE a role (``collab``, ``small``, ``large``, ``rsd``, ``router``) or a
route name, METRIC a summary field (:data:`METRICS`), e.g. ``collab.tokens_per_s >= 1.5 * large.tokens_per_s``. The
result's ``targets`` lists each as ``{"statement", "holds"}`` and the table ends with one ``[ok]`` / ``[MISS]`` line
per target.

``--config FILE`` serves a given config instead (e.g. remote vLLM members named as the zoo models; ``--route`` names
its collaboration route); ``--vllm`` serves each member from a vLLM-CPU server of its own (``evals.vllm_pair``,
started and stopped here) and empties the servers' prefix caches after each route's warm-up, so no route reuses the
prompts an earlier one prefilled. What it leaves out: training the routers (``tandem train``), servers someone
else started (``--config``), and cost (the gateway prices members at zero here — the zoo models have no price).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.collab_defaults import DEFAULT_SUITE, default_artifact, default_pair, model_folder, suite_budget
from evals.gateway_process import start_gateway
from evals.vllm_pair import VLLMStartError, add_vllm_args, options_from_args, parse_params

ARTIFACTS = Path(__file__).resolve().parent.parent / "collab" / "artifacts"
STRATEGIES = ("r2r", "arbitrage", "fusionroute")
EXPERTS = ("expert-arithmetic", "expert-sql", "expert-units")

# ---- pure metrics ------------------------------------------------------------------------------------------------


def step_owners(pieces: Sequence[tuple[str, str, int]], delimiter: str = "\n") -> list[set[str]]:
    """The writers of each step of an answer given as ``(text, model, tokens)`` pieces; steps are split by
    ``delimiter`` and blank steps are dropped."""
    steps: list[tuple[str, set[str]]] = []
    text, who = "", set()
    for piece, model, _ in pieces:
        parts = piece.split(delimiter)
        for j, part in enumerate(parts):
            if part:
                text += part
                who.add(model)
            if j < len(parts) - 1:
                steps.append((text, who))
                text, who = "", set()
    steps.append((text, who))
    return [w for t, w in steps if t.strip()]


@dataclass
class RouteStats:
    """Totals over one route's requests."""

    n: int = 0
    score: float = 0.0
    tokens: int = 0
    tokens_by: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    steps_by: dict[str, int] = field(default_factory=dict)
    decoded_by: dict[str, int] = field(default_factory=dict)  # usage completion_tokens per model
    seconds: float = 0.0
    groups: dict[str, RouteStats] = field(default_factory=dict)  # per domain (the example's suite)

    def add(self, score: float, pieces: Sequence[tuple[str, str, int]], decoded: Mapping[str, int], seconds: float,
            delimiter: str = "\n", group: str | None = None) -> None:
        if group is not None:
            self.groups.setdefault(group, RouteStats()).add(score, pieces, decoded, seconds, delimiter)
        self.n += 1
        self.score += score
        self.seconds += seconds
        for _, model, toks in pieces:
            self.tokens += toks
            self.tokens_by[model] = self.tokens_by.get(model, 0) + toks
        for owners in step_owners(pieces, delimiter):
            self.steps += 1
            for m in owners:
                self.steps_by[m] = self.steps_by.get(m, 0) + 1
        for m, c in decoded.items():
            self.decoded_by[m] = self.decoded_by.get(m, 0) + int(c)

    def token_share(self) -> dict[str, float]:
        """Share of the answer tokens each model wrote."""
        return {m: c / self.tokens for m, c in sorted(self.tokens_by.items())} if self.tokens else {}

    def summary(self, large: str | None, params: Mapping[str, int]) -> dict[str, Any]:
        from collab.r2r import average_activated_params
        from collab.session import ModelUsage

        usage = {m: ModelUsage(completion_tokens=c) for m, c in self.decoded_by.items()}
        return {
            "n": self.n,
            "accuracy": self.score / self.n if self.n else 0.0,
            "large_token_share": (self.tokens_by.get(large, 0) / self.tokens if self.tokens else 0.0) if large
            else None,
            "large_step_share": (self.steps_by.get(large, 0) / self.steps if self.steps else 0.0) if large else None,
            "avg_activated_params": average_activated_params(usage, self.tokens, params),
            "tokens_per_s": self.tokens / self.seconds if self.seconds > 0 else 0.0,
            "tokens": self.tokens,
            "token_share": self.token_share(),
            "by_suite": {g: {"n": s.n, "accuracy": s.score / s.n if s.n else 0.0, "token_share": s.token_share()}
                         for g, s in sorted(self.groups.items())},
        }


# ---- targets -----------------------------------------------------------------------------------------------------

METRICS = ("n", "accuracy", "large_token_share", "large_step_share", "avg_activated_params", "tokens_per_s", "tokens")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b + 1e-9, ">=": lambda a, b: a >= b - 1e-9, "<": lambda a, b: a < b,
    ">": lambda a, b: a > b}


class TargetError(ValueError):
    """A target that does not parse, or names no role or route of the run."""


@dataclass(frozen=True)
class Operand:
    """One side of a target: ``scale × route.metric + offset``, or the constant ``offset`` when ``route`` is None."""

    route: str | None = None  # a role (collab, small, large, rsd, router) or a route name
    metric: str = ""
    scale: float = 1.0
    offset: float = 0.0

    def value(self, routes: Mapping[str, Mapping[str, Any]], roles: Mapping[str, str]) -> float | None:
        if self.route is None:
            return self.offset
        v = routes[resolve_route(self.route, routes, roles)][self.metric]
        return None if v is None else self.scale * float(v) + self.offset


@dataclass(frozen=True)
class Target:
    """A threshold the user states, e.g. ``collab.accuracy >= large.accuracy - 0.05``; see :func:`parse_target`."""

    text: str
    left: Operand
    op: str
    right: Operand


def _number(tok: str) -> float | None:
    try:
        return float(tok.removesuffix("%")) / (100 if tok.endswith("%") else 1)
    except ValueError:
        return None


def _operand(toks: list[str], text: str) -> Operand:
    """``NUMBER`` | ``[NUMBER *] ROUTE.METRIC [(+|-) NUMBER]`` (tokens separated by spaces)."""
    fail = TargetError(f"target {text!r}: expected NUMBER or [NUMBER *] ROUTE.METRIC [(+|-) NUMBER] on each side of "
                      f"the comparison, tokens separated by spaces")
    offset = 0.0
    if len(toks) >= 3 and toks[-2] in ("+", "-"):
        off = _number(toks[-1])
        if off is None:
            raise fail
        offset, toks = (-off if toks[-2] == "-" else off), toks[:-2]
    if len(toks) == 1 and (constant := _number(toks[0])) is not None:
        return Operand(offset=constant + offset)
    scale = 1.0
    if len(toks) == 3 and toks[1] == "*":
        left, right = _number(toks[0]), _number(toks[2])
        if left is not None and right is None:
            scale, toks = left, toks[2:]
        elif right is not None and left is None:
            scale, toks = right, toks[:1]
        else:
            raise fail
    if len(toks) != 1:
        raise fail
    route, dot, metric = toks[0].rpartition(".")
    if not dot or not route:
        raise fail
    if metric not in METRICS:
        raise TargetError(f"target {text!r}: unknown metric {metric!r} (one of {', '.join(METRICS)})")
    return Operand(route, metric, scale, offset)


def parse_target(text: str) -> Target:
    """``LEFT OP RIGHT`` with OP one of ``<= >= < >``; each side a number (``0.25`` or ``25%``) or
    ``[NUMBER *] ROUTE.METRIC [(+|-) NUMBER]`` where ROUTE is a role (``collab``, ``small``, ``large``, ``rsd``,
    ``router``) or a route name and METRIC one of :data:`METRICS`. Tokens are separated by spaces."""
    toks = text.split()
    ops = [i for i, t in enumerate(toks) if t in COMPARISONS]
    if len(ops) != 1:
        raise TargetError(f"target {text!r}: needs exactly one of {' '.join(COMPARISONS)} (separated by spaces)")
    i = ops[0]
    return Target(text.strip(), _operand(toks[:i], text), toks[i], _operand(toks[i + 1:], text))


def load_targets(texts: Iterable[str] = (), files: Iterable[str | Path] = ()) -> list[Target]:
    """Targets from ``--target`` texts and from YAML / JSON files holding a list of such texts."""
    import yaml

    out = [parse_target(t) for t in texts]
    for f in files:
        data = yaml.safe_load(Path(f).read_text())
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise TargetError(f"{f}: expected a list of target texts, e.g. - collab.accuracy >= large.accuracy - 0.05")
        out += [parse_target(t) for t in data]
    return out


def resolve_route(name: str, routes: Iterable[str], roles: Mapping[str, str]) -> str:
    """The route a target names: a role's route, else the route of that name."""
    if name in roles:
        return roles[name]
    if name in routes:
        return name
    raise TargetError(f"target names {name!r}: neither a role ({', '.join(roles)}) nor a route ({', '.join(routes)})")


def check_target_names(targets: Sequence[Target], routes: Iterable[str], roles: Mapping[str, str]) -> None:
    """Raise :class:`TargetError` when a target names no role or route of the run (before anything is asked)."""
    names = list(routes)
    for t in targets:
        for side in (t.left, t.right):
            if side.route is not None:
                resolve_route(side.route, names, roles)


def target_checks(targets: Sequence[Target], routes: Mapping[str, Mapping[str, Any]], roles: Mapping[str, str]
                  ) -> list[tuple[str, bool]]:
    """Each target as (statement with the measured values, holds); a side whose metric is not measured (e.g. the
    large model's share without a large model) does not hold."""
    out: list[tuple[str, bool]] = []
    for t in targets:
        a, b = t.left.value(routes, roles), t.right.value(routes, roles)
        if a is None or b is None:
            out.append((f"{t.text} (not measured)", False))
            continue
        out.append((f"{t.text} ({a:.4g} vs {b:.4g})", COMPARISONS[t.op](a, b)))
    return out


SWEEP_SHARE = {"r2r": "large_token_share", "arbitrage": "large_step_share"}  # what a threshold sweep minimises


def match_threshold(points: Sequence[Mapping[str, float]], reference_accuracy: float, tolerance: float = 0.0,
                    share: str = "large_step_share") -> dict[str, float] | None:
    """Of sweep points ``{"tau", "accuracy", share}``, the one with the smallest ``share`` (the large model's share of
    steps or tokens) whose accuracy reaches ``reference_accuracy − tolerance`` (ties: the larger τ); ``None`` if none
    does."""
    ok = [p for p in points if p["accuracy"] >= reference_accuracy - tolerance - 1e-12]
    if not ok:
        return None
    return dict(min(ok, key=lambda p: (p[share], -p["tau"])))


def sweep_routes(strategy: str, thresholds: Sequence[float], deltas: Sequence[float], suite: str, slm: str,
                 llm: str, artifact: str) -> list[dict[str, Any]]:
    """Routes ``<strategy>:τ`` (the R2R or Arbitrage router at each τ) and, for Arbitrage, RSD routes ``rsd:δ``
    (each acceptance threshold)."""
    members = {"draft": slm, "target": llm} if strategy == "arbitrage" else {"slm": slm, "llm": llm}
    out = [{"name": f"{strategy}:{t:g}", "kind": "collab", "strategy": strategy, "members": members,
            "artifact": artifact, "params": {"tau": float(t)}} for t in thresholds]
    if strategy != "arbitrage":
        return out
    members = {"draft": slm, "target": llm}
    out += [{"name": f"rsd:{d:g}", "kind": "collab", "strategy": "arbitrage", "members": members,
             "params": {"mode": "rsd", "prm": f"suite:{suite}", "delimiter": "\n", "delta": float(d)}} for d in deltas]
    return out


def format_table(routes: Mapping[str, Mapping[str, Any]]) -> str:
    head = "| route | n | accuracy | large tok share | large step share | avg activated params | tokens/s |"
    lines = [head, "|" + "---|" * 7]
    for name, r in routes.items():
        share = "-" if r["large_token_share"] is None else f"{r['large_token_share']:.3f}"
        steps = "-" if r["large_step_share"] is None else f"{r['large_step_share']:.3f}"
        lines.append(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {share} | {steps} | "
                     f"{r['avg_activated_params'] / 1e6:.3f}M | {r['tokens_per_s']:.1f} |")
    return "\n".join(lines)


def format_domains(routes: Mapping[str, Mapping[str, Any]], collab: str) -> str:
    """Accuracy per domain (the examples' suites) for every route, then which model wrote the collaboration's
    tokens in each domain (e.g. whether FusionRoute's head picks the domain's expert); empty for a one-suite run."""
    suites = sorted({g for r in routes.values() for g in r.get("by_suite", {})})
    if len(suites) < 2:
        return ""
    lines = ["| route | " + " | ".join(suites) + " |", "|" + "---|" * (len(suites) + 1)]
    for name, r in routes.items():
        acc = [f"{r['by_suite'][g]['accuracy']:.3f}" if g in r["by_suite"] else "-" for g in suites]
        lines.append(f"| {name} | " + " | ".join(acc) + " |")
    by = routes[collab].get("by_suite", {})
    writers = sorted({m for g in by.values() for m in g["token_share"]})
    lines += ["", f"{collab}: token share per domain", "| domain | " + " | ".join(writers) + " |",
              "|" + "---|" * (len(writers) + 1)]
    for g in suites:
        share = by.get(g, {}).get("token_share", {})
        lines.append(f"| {g} | " + " | ".join(f"{share.get(m, 0.0):.3f}" for m in writers) + " |")
    return "\n".join(lines)


# ---- the run -----------------------------------------------------------------------------------------------------


def model_params(folder: Path) -> int:
    """Parameter count from the model's safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def plan(strategy: str, suite: str, artifact: str, *, slm: str, llm: str, experts: Sequence[str]
         ) -> tuple[list[str], list[dict[str, Any]], dict[str, str]]:
    """(zoo models to serve, collab routes, roles: which route is the collaboration / small / large / rsd / router)."""
    if strategy == "r2r":
        routes = [{"name": "r2r", "kind": "collab", "strategy": "r2r", "members": {"slm": slm, "llm": llm},
                   "artifact": artifact}]
        return [slm, llm], routes, {"collab": "r2r", "small": slm, "large": llm}
    if strategy == "arbitrage":
        routes = [{"name": "arbitrage", "kind": "collab", "strategy": "arbitrage",
                   "members": {"draft": slm, "target": llm}, "artifact": artifact},
                  {"name": "rsd", "kind": "collab", "strategy": "arbitrage", "members": {"draft": slm, "target": llm},
                   "params": {"mode": "rsd", "prm": f"suite:{suite}", "delimiter": "\n", "delta": 0.5}}]
        return [slm, llm], routes, {"collab": "arbitrage", "rsd": "rsd", "small": slm, "large": llm}
    members = {"router": slm, **{e: e for e in experts}}
    routes = [{"name": "fusionroute", "kind": "collab", "strategy": "fusionroute", "members": members,
               "artifact": artifact}]
    return list(dict.fromkeys([slm, llm, *experts])), routes, {"collab": "fusionroute", "router": slm, "small": slm,
                                                                 "large": llm}


def ask(client: Any, route: str, prompt: str, max_tokens: int, count: Any, finals: list[Any] | None = None
        ) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """One streamed request: the answer as ``(text, model, tokens)`` pieces and each model's decoded tokens (the
    last chunk's ``tandem`` object is appended to ``finals`` when given)."""
    stream = client.chat.completions.create(model=route, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    pieces: list[tuple[str, str, int]] = []
    decoded: dict[str, int] = {}
    for chunk in stream:
        extra = chunk.model_extra or {}
        if chunk.choices and chunk.choices[0].delta.content:
            text = chunk.choices[0].delta.content
            model = (extra.get("tandem") or {}).get("model") or route
            pieces.append((text, model, max(1, count(text))))
        for u in (extra.get("tandem") or {}).get("usage") or []:
            decoded[u["model"]] = decoded.get(u["model"], 0) + int(u.get("completion_tokens") or 0)
        if finals is not None and (extra.get("tandem") or {}).get("usage") is not None:
            finals.append(extra["tandem"])
    return pieces, decoded


def run_eval(strategy: str, suite: str, *, n: int, artifact: str, zoo: Path, slm: str = "small",
             llm: str = "large", experts: Sequence[str] = EXPERTS, max_tokens: int | None = None, threads: int = 1,
             progress: bool = True, log: Any = print, config: Path | None = None, route: str | None = None,
             split: str = "test", thresholds: Sequence[float] = (), deltas: Sequence[float] = (),
             targets: Sequence[Target] = (), vllm: Any = None, draft_layers: Path | None = None,
             collab_params: Mapping[str, Any] | None = None, match_tolerance: float = 0.0
             ) -> dict[str, Any]:
    """Serve, ask, score; the JSON-able result (see the module docstring). ``config``: serve this gateway config
    instead (its backends named as the zoo models, e.g. vLLM servers); ``route``: the collaboration's route name;
    ``thresholds`` / ``deltas``: the router's τ sweep routes (R2R, Arbitrage) / RSD's δ (Arbitrage), matched with
    ``match_tolerance``; ``targets``: checked on the
    summaries (a target naming no role or route of the run fails before the gateway starts); ``vllm``: an
    ``evals.vllm_pair.VLLMOptions`` — serve every member from its own vLLM-CPU server (started and stopped here);
    ``collab_params``: extra params of the collaboration route."""
    import openai
    from transformers import AutoTokenizer

    from evals import collab_tasks as tasks

    models, collab_routes, roles = plan(strategy, suite, str(Path(artifact).resolve()), slm=slm, llm=llm,
                                        experts=experts)
    if strategy in SWEEP_SHARE and (thresholds or deltas):
        collab_routes = collab_routes + sweep_routes(strategy, thresholds, deltas, suite, slm, llm,
                                                     str(Path(artifact).resolve()))
    dirs = {m: model_folder(m, zoo, draft_layers) for m in models}
    missing = [m for m, d in dirs.items() if not (d / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"models missing: {', '.join(f'{m} ({dirs[m]})' for m in missing)} (run `tandem zoo "
                                f"build`)")
    if route:
        collab_routes = [{**collab_routes[0], "name": route}, *collab_routes[1:]]
        roles = {**roles, "collab": route}
    if collab_params:
        collab_routes = [{**collab_routes[0], "params": {**collab_routes[0].get("params", {}), **collab_params}},
                         *collab_routes[1:]]
    params = {m: model_params(d) for m, d in dirs.items()}
    cfg = {"backends": [{"name": m, "kind": "local", "path": str(d)} for m, d in dirs.items()],
           "routes": collab_routes}
    if config is not None:
        import yaml

        cfg = yaml.safe_load(Path(config).read_text())
    order = [r["name"] for r in collab_routes] + models
    check_target_names(targets, order, roles)
    examples = tasks.task_examples(suite, split, n)
    budget = max_tokens or suite_budget(suite)
    tok = AutoTokenizer.from_pretrained(str(dirs[slm]))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    stats = {r: RouteStats() for r in order}
    outputs: dict[str, list[str]] = {r: [] for r in order}
    from evals.collab_protocol import ProtocolStats, collab_decision

    protocol = {r["name"]: ProtocolStats() for r in collab_routes}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tandem-collab-eval-") as tmp:
        servers: list[Any] = []
        if vllm is not None:
            from evals.vllm_pair import reset_prefix_caches, serve_for_eval, vllm_backends

            servers = stack.enter_context(serve_for_eval(dirs, vllm, log))
            cfg = {"backends": vllm_backends(servers), "routes": collab_routes}
        log(f"starting the gateway with {', '.join(models)} ...")
        threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        gw = start_gateway(cfg, Path(tmp), env=threads_env)
        try:
            client = openai.OpenAI(base_url=gw.base + "/v1", api_key="eval", max_retries=0, timeout=600)
            for route in order:
                ask(client, route, examples[0].prompt, 4, count)  # warm-up: loads the models, fills caches
                if servers:  # every route starts with empty prefix caches, as it would on new prompts
                    reset_prefix_caches(servers)
                items: Iterable[Any] = examples
                if progress:
                    from tqdm import tqdm

                    items = tqdm(examples, desc=route, unit="ex", file=sys.stderr)
                for ex in items:
                    finals: list[Any] = []
                    t0 = time.perf_counter()
                    pieces, decoded = ask(client, route, ex.prompt, budget, count, finals)
                    dt = time.perf_counter() - t0
                    if route in protocol and finals:
                        protocol[route].add(collab_decision(finals[-1]), dt, float(finals[-1].get("overhead_ms") or 0))
                    text = "".join(p for p, _, _ in pieces)
                    outputs[route].append(text)
                    stats[route].add(tasks.check(ex, text), pieces, decoded, dt, group=ex.suite)
        except Exception:
            log(gw.log()[-3000:])
            raise
        finally:
            gw.stop()
    summaries = {r: stats[r].summary(llm, params) for r in order}
    for r, ps in protocol.items():
        if ps.requests:
            summaries[r]["protocol"] = ps.summary()
    extra: dict[str, Any] = {}
    if strategy in SWEEP_SHARE and thresholds:
        share, reference = SWEEP_SHARE[strategy], roles["rsd" if strategy == "arbitrage" else "large"]
        sweep = [{"tau": float(t), "accuracy": summaries[f"{strategy}:{t:g}"]["accuracy"],
                  share: summaries[f"{strategy}:{t:g}"][share]} for t in thresholds]
        extra = {"sweep": sweep, "matched_to": reference,
                 "matched": match_threshold(sweep, summaries[reference]["accuracy"], match_tolerance, share)}
    return {"strategy": strategy, "suite": suite, "split": split, "n": len(examples), **extra, "max_tokens": budget,
            "artifact": artifact, "params": params, "roles": roles, "routes": summaries,
            "targets": [{"statement": s, "holds": h} for s, h in target_checks(targets, summaries, roles)]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem eval collab", description="measure a collaboration against its single "
                                "models through the gateway")
    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--suite", help="suite name, a comma list, or 'mixed' (default: english for r2r, english-steps "
                   "for arbitrage — the real pair —, mixed for fusionroute)")
    p.add_argument("--n", type=int, default=100, help="test examples")
    p.add_argument("--artifact", help="trained router file (default: collab/artifacts/<strategy>-<suite>.pt)")
    p.add_argument("--zoo", type=Path, help="zoo folder (default: $TANDEM_ZOO_DIR or the packaged zoo)")
    p.add_argument("--slm", help="small / draft / router model: smollm2-draft, a zoo name or an HF folder "
                   "(default: smollm2-draft on the English suites, else small)")
    p.add_argument("--llm", help="large / target model: smollm2, a zoo name or an HF folder (default: smollm2 on "
                   "the English suites, else large)")
    p.add_argument("--draft-layers", type=Path, help="the draft's trained layers file (default: "
                   "evals/zoo/models/smollm2-draft/layers.safetensors)")
    p.add_argument("--experts", default=",".join(EXPERTS), help="FusionRoute experts (zoo names)")
    p.add_argument("--max-tokens", type=int, help="answer budget (default: from the suite's longest answer)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the gateway process")
    p.add_argument("--config", type=Path, help="serve this gateway config instead of the generated one (backends "
                   "named as the zoo models, e.g. deploy/examples/r2r-vllm.yaml)")
    p.add_argument("--route", help="the collaboration's route name (default: the strategy's name)")
    p.add_argument("--split", default="test", choices=["test", "validation"], help="the suite's split to ask")
    p.add_argument("--thresholds", help="R2R, Arbitrage: comma list of τ, one extra route <strategy>:τ each")
    p.add_argument("--match-tolerance", type=float, default=0.0, help="--thresholds: the matched τ's accuracy may "
                   "be this far below the reference's (RSD's for Arbitrage, the large model's for R2R)")
    p.add_argument("--deltas", help="Arbitrage: comma list of RSD δ, one extra route rsd:δ each")
    p.add_argument("--target", action="append", default=[], metavar="EXPR",
                   help="a threshold to check, e.g. 'collab.accuracy >= large.accuracy - 0.05' or "
                   "'collab.large_token_share <= 30%%' (repeatable; see evals.collab_eval.parse_target)")
    p.add_argument("--targets", action="append", default=[], type=Path, metavar="FILE",
                   help="YAML / JSON file with a list of such thresholds (repeatable)")
    add_vllm_args(p)
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def floats(text: str | None) -> list[float]:
    """``"0,0.05"`` → ``[0.0, 0.05]``; none → ``[]``."""
    return [float(x) for x in (text or "").split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else None)
    from evals.zoo.paths import zoo_dir

    try:
        targets = load_targets(args.target, args.targets)
        collab_params = parse_params(args.collab_param)
    except (OSError, TargetError, ValueError) as e:
        print(f"tandem eval collab: {e}", file=sys.stderr)
        return 2
    args.suite = args.suite or DEFAULT_SUITE[args.strategy]
    small, large = default_pair(args.suite)
    args.slm, args.llm = args.slm or small, args.llm or large
    artifact = args.artifact or str(default_artifact(args.strategy, args.suite))
    if not Path(artifact).is_file():
        print(f"tandem eval collab: no router file {artifact} (train one: tandem train {args.strategy} ... --out "
              f"{artifact})", file=sys.stderr)
        return 2
    try:
        result = run_eval(args.strategy, args.suite, n=args.n, artifact=artifact, zoo=args.zoo or zoo_dir(),
                          slm=args.slm, llm=args.llm, draft_layers=args.draft_layers,
                          experts=[e for e in args.experts.split(",") if e],
                          max_tokens=args.max_tokens, threads=args.threads, progress=not args.quiet,
                          log=lambda m: print(m, file=sys.stderr, flush=True), config=args.config, route=args.route,
                          split=args.split, thresholds=floats(args.thresholds), deltas=floats(args.deltas),
                          targets=targets, vllm=options_from_args(args), collab_params=collab_params,
                          match_tolerance=args.match_tolerance)
    except (FileNotFoundError, TargetError, VLLMStartError) as e:
        print(f"tandem eval collab: {e}", file=sys.stderr)
        return 2
    print(f"{args.strategy} on {args.suite} {args.split} (n={result['n']}, max_tokens={result['max_tokens']})")
    print(format_table(result["routes"]))
    domains = format_domains(result["routes"], result["roles"]["collab"])
    if domains:
        print(domains)
    from evals.collab_protocol import format_protocol

    if protocol_lines := format_protocol(result["routes"]):
        print(protocol_lines)
    for t in result["targets"]:
        print(f"[{'ok' if t['holds'] else 'MISS'}] {t['statement']}")
    if "matched" in result:
        m = result["matched"]
        share = SWEEP_SHARE[result["strategy"]]
        print(f"matched to {result['matched_to']}'s accuracy: " + (
            f"τ={m['tau']:g} (accuracy {m['accuracy']:.3f}, {share.replace('_', ' ')} {m[share]:.3f})" if m
            else "no τ reaches it"))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
