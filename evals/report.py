"""Eval report: one self-contained HTML page (inline SVG, inline CSS, no external URL) and a Markdown summary.

``summarize(run)`` computes every number from a :class:`~evals.run_store.RunData` with ``evals.metrics``: per route
accuracy (bootstrap interval), $ per 1k requests, cost-of-pass = E[cost] / accuracy (bootstrap interval over items),
latency percentiles, tokens, whether it is on the Pareto frontier; the frontier cost-of-pass over all routes (per
item the cheapest route's cost-of-pass, then averaged; with the items no route solves left out and counted
separately), the zero-router hull (random mixing of the routes), accuracy per category, and the routing mix per
category (which model answered: from the decision for routers, by completion tokens where one answer used several
models). ``render_html`` draws it: cost-vs-accuracy scatter with the frontier and the hull, the tables, stacked bars
of the routing mix, latency bars, and for collaborations the generated text with each piece coloured by the model
that wrote it. ``write_report(run, out_dir)`` writes ``report.html`` and ``summary.md``.

What it leaves out: running anything (``evals.live``), the plot primitives, formats and stylesheet (``evals.svg``),
JavaScript charts, and more than ``MAX_SAMPLES`` texts per collaboration route.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evals import metrics
from evals.run_store import RunData
from evals.svg import (
    CSS,
    Axis,
    colours,
    cost_axis,
    esc,
    fmt_money,
    fmt_pct,
    fmt_s,
    label_position,
    nice_ticks,
    plot_frame,
    points_attr,
    sampled_hull,
)

__all__ = ["RouteSummary", "Summary", "render_html", "render_markdown", "summarize", "write_report"]

MAX_SAMPLES = 6


# ------------------------------------------------------------------------------------------------ numbers


@dataclass
class RouteSummary:
    route: str
    n: int  # items with a result
    accuracy: float
    accuracy_ci: tuple[float, float]
    cost_per_1k: float
    mean_cost: float
    cost_of_pass: float
    cost_of_pass_ci: tuple[float, float]
    latency: dict[str, float]
    ttft_p50: float
    tokens: dict[str, float]  # mean prompt / completion tokens per request
    on_frontier: bool = False
    errors: int = 0


@dataclass
class Summary:
    run_id: str
    meta: dict[str, Any]
    routes: list[RouteSummary]
    n_items: int
    categories: list[str]
    frontier: list[str]  # routes on the Pareto frontier, cheapest first
    hull: list[tuple[float, float]]  # zero-router hull in (mean cost, accuracy)
    frontier_cop: float  # over all items (inf when some item is solved by no route)
    frontier_cop_solved: float  # over items some route solves
    frontier_cop_ci: tuple[float, float]
    unsolved: int
    by_category: dict[str, dict[str, float]]  # route -> category -> accuracy
    mix: dict[str, dict[str, dict[str, float]]]  # route -> category ("all" too) -> model -> share
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # route -> rows with provenance
    models: list[str] = field(default_factory=list)  # every model named in the mix or the samples


def _frontier_values(run: RunData) -> np.ndarray:
    """Per item the cheapest cost-of-pass over routes (inf: no route solved it; NaN: no route has a result)."""
    n = len(run.items)
    out = np.full(n, np.nan)
    for rt in run.routes:
        c, s = run.costs[rt], run.scores[rt]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s > 0, c / np.where(s > 0, s, 1.0), np.inf)
        v[np.isnan(s)] = np.nan
        out = np.where(np.isnan(out), v, np.where(np.isnan(v), out, np.minimum(out, v)))
    return out


def _row_weights(row: dict[str, Any]) -> dict[str, float]:
    """Which model answered a row: completion-token shares when several models wrote it, else the chosen backend."""
    tokens = row.get("tokens") or {}
    if len(tokens) > 1:
        total = sum(t.get("completion", 0) for t in tokens.values())
        if total > 0:
            return {m: t.get("completion", 0) / total for m, t in tokens.items()}
    dec = row.get("decision") or {}
    model = dec.get("backend") or dec.get("chosen") or (next(iter(tokens)) if tokens else None) or row["route"]
    return {str(model): 1.0}


def summarize(run: RunData, n_boot: int = 1000, seed: int = 0) -> Summary:
    """Every number of the report, from the run's arrays and rows."""
    routes: list[RouteSummary] = []
    for rt in run.routes:
        c, s, lat = run.costs[rt], run.scores[rt], run.latency[rt]
        ok = ~np.isnan(s)
        rows = run.route_rows(rt)
        good = [r for r in rows if r.get("error") is None]
        ttft = [r["ttft_s"] for r in good if r.get("ttft_s") is not None]
        pair = np.c_[np.nan_to_num(c[ok], nan=0.0), s[ok]]
        routes.append(RouteSummary(
            route=rt, n=int(ok.sum()), accuracy=metrics.accuracy(s),
            accuracy_ci=metrics.bootstrap_ci(s, n=n_boot, seed=seed),
            cost_per_1k=metrics.cost_per_1k_requests(c[ok]), mean_cost=float(np.nanmean(c[ok])) if ok.any() else math.nan,
            cost_of_pass=metrics.cost_of_pass(pair[:, 0], pair[:, 1]) if ok.any() else math.nan,
            cost_of_pass_ci=metrics.bootstrap_ci(pair, lambda a: metrics.cost_of_pass(a[:, 0], a[:, 1]), n=n_boot,
                                                 seed=seed) if ok.any() else (math.nan, math.nan),
            latency=metrics.latency_percentiles(lat), ttft_p50=float(np.median(ttft)) if ttft else math.nan,
            tokens={"prompt": float(np.mean([sum(t["prompt"] for t in (r.get("tokens") or {}).values()) for r in good]))
                    if good else math.nan,
                    "completion": float(np.mean([sum(t["completion"] for t in (r.get("tokens") or {}).values())
                                                 for r in good])) if good else math.nan},
            errors=sum(1 for r in rows if r.get("error") is not None),
        ))
    points = [(r.mean_cost, r.accuracy) for r in routes]
    front = [routes[i].route for i in metrics.pareto_frontier(points)]
    for r in routes:
        r.on_frontier = r.route in front
    finite = [p for p in points if not (math.isnan(p[0]) or math.isnan(p[1]))]
    hull = metrics.upper_hull(finite) if finite else []

    fv = _frontier_values(run)
    present = fv[~np.isnan(fv)]
    unsolved = int(np.isinf(present).sum())
    frontier_cop = metrics.frontier_cost_of_pass(run.costs, run.scores) if run.routes and run.items else math.nan
    solved = present[np.isfinite(present)]
    frontier_solved = float(solved.mean()) if solved.size else math.nan
    frontier_ci = metrics.bootstrap_ci(solved, n=n_boot, seed=seed) if solved.size else (math.nan, math.nan)

    categories = sorted(set(run.categories), key=lambda c: (_cat_key(c), c))
    by_cat: dict[str, dict[str, float]] = {}
    cats = np.array(run.categories)
    for rt in run.routes:
        by_cat[rt] = {c: metrics.accuracy(run.scores[rt][cats == c]) for c in categories}

    mix: dict[str, dict[str, dict[str, float]]] = {}
    models: list[str] = []
    for rt in run.routes:
        acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for r in run.route_rows(rt):
            if r.get("error") is not None:
                continue
            for m, w in _row_weights(r).items():
                acc[str(r.get("category") or "all")][m] += w
                acc["all"][m] += w
                if m not in models:
                    models.append(m)
        mix[rt] = {c: {m: v / sum(d.values()) for m, v in sorted(d.items())} for c, d in acc.items()}

    samples: dict[str, list[dict[str, Any]]] = {}
    for rt in run.routes:
        with_prov = [r for r in run.route_rows(rt) if r.get("provenance") and r.get("error") is None]
        if with_prov:
            passed = [r for r in with_prov if (r.get("score") or 0) > 0]
            failed = [r for r in with_prov if not (r.get("score") or 0) > 0]
            picked = (passed[: MAX_SAMPLES // 2] + failed)[:MAX_SAMPLES]
            picked += [r for r in passed[MAX_SAMPLES // 2:] if r not in picked][: MAX_SAMPLES - len(picked)]
            samples[rt] = picked
            for r in picked:
                for m, _ in r["provenance"]:
                    if m not in models:
                        models.append(m)
    return Summary(run.run_id, run.meta, routes, len(run.items), categories, front, hull, frontier_cop,
                   frontier_solved, frontier_ci, unsolved, by_cat, mix, samples, models)


def _cat_key(c: str) -> int:
    order = ["easy", "medium", "hard", "extra"]
    if c in order:
        return order.index(c)
    digits = "".join(ch for ch in c if ch.isdigit())
    return int(digits[:6]) if digits else 10**7


# ------------------------------------------------------------------------------------------------ charts


def scatter_svg(s: Summary, colour: dict[str, str], width: int = 720, height: int = 420) -> str:
    """Cost ($ per 1k requests) vs accuracy: a point per route with its accuracy interval, the Pareto frontier and
    the zero-router hull (shaded)."""
    pts = [(r.route, r.cost_per_1k, r.accuracy, r.accuracy_ci) for r in s.routes
           if not (math.isnan(r.cost_per_1k) or math.isnan(r.accuracy))]
    ml, mr, mt, mb = 70, 30, 20, 56
    out = [f'<svg class="plot" id="scatter" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="cost versus accuracy">']
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">no results</text></svg>')
        return "".join(out)
    x = cost_axis([p[1] for p in pts], ml, width - mr)
    y = Axis(0.0, 1.0, height - mb, mt)
    hi = x.hi
    out += plot_frame(x, y, nice_ticks(0, 1, 5), fmt_money, lambda t: f"{100 * t:.0f}%",
                      f'cost per 1,000 requests{" (log scale)" if x.log else ""}', "accuracy", height)
    # zero-router hull: linear mixing in cost, drawn through samples so it is right on a log axis too
    hull = [(c * 1000.0, a) for c, a in s.hull]
    if hull:
        path = sampled_hull(hull, hi)
        line = points_attr(path, x, y)
        area = f"{x(path[0][0]):.1f},{y(0):.1f} {line} {x(hi):.1f},{y(0):.1f}"
        out.append(f'<polygon points="{area}" class="hullfill"><title>zero router: random mixing of routes'
                   f'</title></polygon><polyline points="{line}" class="hull"/>')
    front = [p for name in s.frontier for p in pts if p[0] == name]
    if len(front) > 1:
        out.append(f'<polyline class="frontier" points="{points_attr([(c, a) for _, c, a, _ in front], x, y)}"/>')
    xy = [(x(c), y(a)) for _, c, a, _ in pts]
    boxes: list[tuple[float, float, float, float]] = []  # placed label boxes (x0, y0, x1, y1)
    labels: list[str] = []
    dots: list[str] = []
    for k, (name, c, a, (lo_ci, hi_ci)) in enumerate(pts):
        px, py = xy[k]
        col = colour.get(name, "#333")
        if not math.isnan(lo_ci):
            dots.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y(lo_ci):.1f}" y2="{y(hi_ci):.1f}" stroke="{col}" '
                        f'class="ci"/>')
        ring = ' class="pt onfront"' if name in s.frontier else ' class="pt"'
        dots.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="8" fill="{col}"{ring}><title>{esc(name)}: '
                    f'{fmt_pct(a)} at {esc(fmt_money(c))} / 1k requests</title></circle>')
        lx, ly, anchor = label_position(px, py, 7.6 * len(name) + 6, xy, boxes, (ml, mt, width - mr, height - mb))
        labels.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" class="label">{esc(name)}</text>')
    out += labels + dots  # points on top of labels
    out.append("</svg>")
    return "".join(out)


def mix_svg(s: Summary, colour: dict[str, str], width: int = 720) -> str:
    """Stacked bars: per route and category, the share of answers (or tokens) by model."""
    routes = [r.route for r in s.routes if s.mix.get(r.route)]
    cats = ["all", *[c for c in s.categories if c != "all"]]
    bar_h, gap, ml, mr = 18, 6, 150, 20
    def shown(rt: str) -> list[str]:
        single = len({m for d in s.mix[rt].values() for m in d}) == 1
        return ["all"] if single else [c for c in cats if c in s.mix[rt]]

    rows = sum(len(shown(rt)) + 1 for rt in routes)
    height = rows * (bar_h + gap) + 30
    out = [f'<svg class="plot" id="mix" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="routing mix per category">']
    yy = 6
    w = width - ml - mr
    for rt in routes:
        out.append(f'<text x="4" y="{yy + 13}" class="route">{esc(rt)}</text>')
        yy += bar_h + gap
        for c in shown(rt):
            shares = s.mix[rt][c]
            out.append(f'<text x="{ml - 8}" y="{yy + 13}" text-anchor="end" class="tick">{esc(c)}</text>')
            x0 = float(ml)
            for m, v in shares.items():
                ww = v * w
                out.append(f'<rect x="{x0:.1f}" y="{yy}" width="{max(ww, 0.5):.1f}" height="{bar_h}" '
                           f'fill="{colour.get(m, "#999")}"><title>{esc(rt)} · {esc(c)} · {esc(m)}: '
                           f'{100 * v:.1f}%</title></rect>')
                if ww > 44:
                    out.append(f'<text x="{x0 + ww / 2:.1f}" y="{yy + 13}" text-anchor="middle" class="inbar">'
                               f'{100 * v:.0f}%</text>')
                x0 += ww
            yy += bar_h + gap
    out.append(f'<text x="{ml}" y="{height - 6}" class="muted">share of answers (of generated tokens when '
               f'several models wrote one answer)</text></svg>')
    return "".join(out)


def latency_svg(s: Summary, colour: dict[str, str], width: int = 720) -> str:
    """Per route: p50 bar, p90 extension, p99 tick."""
    rs = [r for r in s.routes if not math.isnan(r.latency.get("p50", math.nan))]
    bar_h, gap, ml, mr, mt = 20, 12, 150, 40, 10
    height = mt + len(rs) * (bar_h + gap) + 40
    top = max([r.latency.get("p99", 0.0) for r in rs] + [1e-3]) * 1.08
    x = Axis(0.0, top, ml, width - mr)
    out = [f'<svg class="plot" id="latency" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="latency percentiles">']
    for t in x.ticks():
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{mt}" y2="{height - 30}" class="grid"/>'
                   f'<text x="{x(t):.1f}" y="{height - 14}" text-anchor="middle" class="tick">{esc(fmt_s(t))}</text>')
    yy = mt
    for r in rs:
        col = colour.get(r.route, "#333")
        p50, p90, p99 = (r.latency.get(k, math.nan) for k in ("p50", "p90", "p99"))
        out.append(f'<text x="{ml - 8}" y="{yy + 14}" text-anchor="end" class="tick">{esc(r.route)}</text>'
                   f'<rect x="{ml}" y="{yy}" width="{x(p90) - ml:.1f}" height="{bar_h}" fill="{col}" opacity="0.35">'
                   f'<title>p90 {esc(fmt_s(p90))}</title></rect>'
                   f'<rect x="{ml}" y="{yy}" width="{max(x(p50) - ml, 1):.1f}" height="{bar_h}" fill="{col}">'
                   f'<title>p50 {esc(fmt_s(p50))}</title></rect>'
                   f'<line x1="{x(p99):.1f}" x2="{x(p99):.1f}" y1="{yy - 3}" y2="{yy + bar_h + 3}" stroke="{col}" '
                   f'stroke-width="2"><title>p99 {esc(fmt_s(p99))}</title></line>')
        yy += bar_h + gap
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ HTML


def _ci(lo: float, hi: float, f: Any) -> str:
    return "" if math.isnan(lo) else f"{f(lo)} – {f(hi)}"


DRAWN_JS = """
window.addEventListener('load',function(){var n=0;document.querySelectorAll('svg.plot').forEach(function(s){
var b=s.getBoundingClientRect();var m=s.querySelectorAll('circle,rect,path,polyline,polygon,line').length;
if(b.width>0&&b.height>0&&m>0){n++;s.setAttribute('data-drawn','1');}
s.setAttribute('data-rect',[b.left+window.scrollX,b.top+window.scrollY,b.width,b.height].map(Math.round).join(','));});
document.body.setAttribute('data-plots-drawn',String(n));});
"""


def _heat(v: float) -> str:
    if math.isnan(v):
        return "background:#f3f4f6"
    # red (0) → amber → green (1)
    hue = 120 * v
    return f"background:hsl({hue:.0f},70%,88%)"


def _tint(hex_colour: str, alpha: str = "33") -> str:
    return hex_colour + alpha


def render_html(s: Summary) -> str:
    col = colours([r.route for r in s.routes])
    mcol = colours(s.models)
    for m in s.models:  # a model that is also a route keeps the route's colour
        if m in col:
            mcol[m] = col[m]
    meta = s.meta
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.get("created_at", time.time())))
    best = max(s.routes, key=lambda r: (-1 if math.isnan(r.accuracy) else r.accuracy), default=None)
    cheapest_good = min((r for r in s.routes if r.on_frontier), key=lambda r: r.cost_of_pass, default=None)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tandem eval · {esc(s.run_id)}"
             f"</title><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style>"
             f"</head><body><main>"]
    parts.append(f"<h1>tandem eval · {esc(s.run_id)}</h1><div class=\"sub\">suite <b>{esc(meta.get('suite', '?'))}"
                 f"</b> · {s.n_items} items · {len(s.routes)} routes · {esc(when)}"
                 f"{' · gateway ' + esc(meta['gateway']) if meta.get('gateway') else ''}</div>")
    cards = []
    if best is not None:
        cards.append(("best accuracy", fmt_pct(best.accuracy), best.route))
    if cheapest_good is not None:
        cards.append(("lowest cost-of-pass / 1k", fmt_money(1000 * cheapest_good.cost_of_pass), cheapest_good.route))
    fcop = s.frontier_cop if math.isfinite(s.frontier_cop) else s.frontier_cop_solved
    cards.append(("frontier cost-of-pass / 1k", fmt_money(1000 * fcop),
                  "over all items" if math.isfinite(s.frontier_cop) else f"{s.unsolved} items solved by no route"))
    cards.append(("requests", str(sum(r.n for r in s.routes)), f"{sum(r.errors for r in s.routes)} errors"))
    parts.append('<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div><div class="d">{esc(d)}</div>'
        f"</div>" for k, v, d in cards) + "</div>")

    parts.append('<section><h2>Cost vs accuracy</h2><div class="legend"><span><b>—</b> Pareto frontier</span>'
                 '<span style="color:#6b7280">- - zero router (random mixing; shaded: reachable without a router)'
                 '</span><span>bars: 95% bootstrap interval</span></div>' + scatter_svg(s, col) + "</section>")

    rows = []
    for r in s.routes:
        star = ' <span class="star" title="on the Pareto frontier">★</span>' if r.on_frontier else ""
        rows.append(
            f'<tr><td><span class="sw" style="background:{col[r.route]}"></span>{esc(r.route)}{star}</td>'
            f"<td>{r.n}</td><td>{fmt_pct(r.accuracy)}<div class=\"ci\">{_ci(*r.accuracy_ci, fmt_pct)}</div></td>"
            f"<td>{fmt_money(r.cost_per_1k)}</td><td>{fmt_money(1000 * r.cost_of_pass)}"
            f"<div class=\"ci\">{_ci(*(1000 * v for v in r.cost_of_pass_ci), fmt_money)}</div></td>"
            f"<td>{fmt_s(r.latency.get('p50', math.nan))}</td><td>{fmt_s(r.ttft_p50)}</td>"
            f"<td>{r.tokens['completion']:.0f}</td><td>{r.errors}</td></tr>")
    frow = (f'<tr class="front"><td><b>frontier</b><div class="ci">cheapest passing route per item</div></td>'
            f"<td>{s.n_items - s.unsolved}</td><td></td><td></td><td>{fmt_money(1000 * s.frontier_cop_solved)}"
            f"<div class=\"ci\">{_ci(*(1000 * v for v in s.frontier_cop_ci), fmt_money)}</div></td>"
            f'<td colspan="4" class="ci" style="text-align:left;white-space:normal">{s.unsolved} of {s.n_items} items '
            f"solved by no route; over all items: {fmt_money(1000 * s.frontier_cop)}</td></tr>")
    parts.append("<section><h2>Cost-of-pass</h2><table><tr><th>route</th><th>n</th><th>accuracy<br>95% CI</th>"
                 "<th>$ / 1k<br>requests</th><th>cost-of-pass<br>$ / 1k passes</th><th>p50<br>latency</th>"
                 "<th>p50<br>TTFT</th><th>output<br>tokens</th><th>errors</th></tr>" + "".join(rows) + frow
                 + "</table><p class=\"muted\">cost-of-pass = mean cost per request ÷ accuracy: the expected dollars "
                 "for one correct answer (shown per 1,000), with a 95% bootstrap interval over items.</p></section>")

    head = "".join(f"<th>{esc(c)}</th>" for c in s.categories)
    body = "".join(
        f'<tr><td><span class="sw" style="background:{col[rt]}"></span>{esc(rt)}</td>'
        + "".join(f'<td style="{_heat(v)}">{fmt_pct(v)}</td>' for v in (s.by_category[rt][c] for c in s.categories))
        + "</tr>" for rt in s.by_category)
    parts.append(f'<section><h2>Accuracy per category</h2><table class="heat"><tr><th>route</th>{head}</tr>{body}'
                 "</table></section>")

    legend = "".join(f'<span><span class="sw" style="background:{mcol[m]}"></span>{esc(m)}</span>' for m in s.models)
    parts.append(f'<section><h2>Routing mix per category</h2><div class="legend">{legend}</div>{mix_svg(s, mcol)}'
                 "</section>")
    parts.append(f"<section><h2>Latency</h2><div class=\"legend\"><span>solid: p50</span><span>light: p90</span>"
                 f"<span>tick: p99</span></div>{latency_svg(s, col)}</section>")

    if s.samples:
        parts.append("<section><h2>Collaborations: who wrote which token</h2>"
                     f'<div class="legend">{legend}</div>')
        for rt, rows_ in s.samples.items():
            parts.append(f"<h3>{esc(rt)}</h3>")
            for r in rows_:
                spans = "".join(
                    f'<span style="background:{_tint(mcol.get(m, "#999999"))};box-shadow:inset 0 -2px 0 '
                    f'{mcol.get(m, "#999")}" title="{esc(m)}">{esc(t)}</span>' for m, t in r["provenance"])
                verdict = '<span class="ok">pass</span>' if (r.get("score") or 0) > 0 else '<span class="bad">fail</span>'
                share = _row_weights(r)
                share_txt = " · ".join(f"{esc(m)} {100 * v:.0f}%" for m, v in share.items())
                parts.append(f'<div class="sample"><div class="q">{esc(r["item_id"])} · {verdict} · {share_txt}\n'
                             f'{esc((r.get("prompt") or "")[:300])}</div><div class="gen">{spans}</div></div>')
        parts.append("</section>")
    parts.append(f'<p class="muted">generated by tandem report · run folder results.jsonl · {esc(when)}</p>'
                 f"</main><script>{DRAWN_JS}</script></body></html>")
    return "".join(parts)


def render_markdown(s: Summary) -> str:
    lines = [f"# tandem eval · {s.run_id}", "",
             f"suite **{s.meta.get('suite', '?')}** · {s.n_items} items · {len(s.routes)} routes", "",
             "| route | n | accuracy (95% CI) | $ / 1k req | cost-of-pass (95% CI) | p50 latency | frontier |",
             "|---|---:|---:|---:|---:|---:|:---:|"]
    for r in s.routes:
        lines.append(f"| {r.route} | {r.n} | {fmt_pct(r.accuracy)} ({_ci(*r.accuracy_ci, fmt_pct)}) | "
                     f"{fmt_money(r.cost_per_1k)} | {fmt_money(r.cost_of_pass)} ({_ci(*r.cost_of_pass_ci, fmt_money)}) | "
                     f"{fmt_s(r.latency.get('p50', math.nan))} | {'★' if r.on_frontier else ''} |")
    lines += ["", f"Frontier cost-of-pass (cheapest passing route per item): {fmt_money(s.frontier_cop_solved)} "
              f"({_ci(*s.frontier_cop_ci, fmt_money)}); {s.unsolved} items solved by no route; over all items: "
              f"{fmt_money(s.frontier_cop)}.", "", "## Accuracy per category", "",
              "| route | " + " | ".join(s.categories) + " |", "|---|" + "---:|" * len(s.categories)]
    for rt, d in s.by_category.items():
        lines.append(f"| {rt} | " + " | ".join(fmt_pct(d[c]) for c in s.categories) + " |")
    lines += ["", "## Routing mix (all categories)", ""]
    for rt, d in s.mix.items():
        lines.append(f"- {rt}: " + ", ".join(f"{m} {100 * v:.0f}%" for m, v in d.get("all", {}).items()))
    return "\n".join(lines) + "\n"


def write_report(run: RunData, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` into ``out_dir``; returns their paths."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(run)
    html_path, md_path = out / "report.html", out / "summary.md"
    html_path.write_text(render_html(s), encoding="utf-8")
    md_path.write_text(render_markdown(s), encoding="utf-8")
    return html_path, md_path
