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

What it leaves out: running anything (``evals.live``), JavaScript charts, and more than ``MAX_SAMPLES`` texts per
collaboration route.
"""

from __future__ import annotations

import html
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

__all__ = ["RouteSummary", "Summary", "render_html", "render_markdown", "summarize", "write_report"]

MAX_SAMPLES = 6
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D", "#FF9DA6",
           "#BAB0AC"]


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


# ------------------------------------------------------------------------------------------------ formatting


def fmt_money(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞"
    if x == 0:
        return "$0"
    if abs(x) >= 100:
        return f"${x:,.0f}"
    if abs(x) >= 1:
        return f"${x:.2f}"
    return f"${x:.3g}"


def fmt_pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def fmt_s(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _ci(lo: float, hi: float, f: Any) -> str:
    return "" if math.isnan(lo) else f"{f(lo)} – {f(hi)}"


def colours(names: list[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


# ------------------------------------------------------------------------------------------------ SVG


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


class Axis:
    """A linear or log10 scale from data to pixels."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.lo, self.hi, self.p0, self.p1, self.log = lo, hi, p0, p1, log

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        return self.p0 + (self._t(max(v, self.lo) if self.log else v) - a) / ((b - a) or 1.0) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if not self.log:
            return nice_ticks(self.lo, self.hi)
        out = []
        for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1):
            for m in (1, 2, 5):
                v = m * 10.0**e
                if self.lo <= v * (1 + 1e-9) and v <= self.hi * (1 + 1e-9):
                    out.append(v)
        return out if len(out) >= 2 else [self.lo, self.hi]


def cost_axis(costs: list[float], p0: float, p1: float, log_pad: float = 1.8, pad: float = 1.15) -> Axis:
    """The cost axis of a cost/accuracy plot: log10 when every cost is positive and they span more than 20×,
    widened ``log_pad``-fold either side; else linear from 0 to ``pad`` × the dearest."""
    pos = [c for c in costs if c > 0]
    if pos and len(pos) == len(costs) and max(pos) / min(pos) > 20:
        return Axis(min(pos) / log_pad, max(pos) * log_pad, p0, p1, log=True)
    return Axis(0.0, (max(costs) * pad) or 1.0, p0, p1)


def plot_frame(x: Axis, y: Axis, yticks: list[float], xfmt: Any, yfmt: Any, xlabel: str, ylabel: str,
               height: float) -> list[str]:
    """SVG of a plot's background, grid, tick labels (``x.ticks()`` and ``yticks``) and axis titles; the plot area
    spans the axes' pixel ranges, ``height`` is the whole picture's (the x title sits 12 px above its bottom)."""
    left, right, bottom, top = x.p0, x.p1, y.p0, y.p1
    out = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="plotbg"/>']
    for t in x.ticks():
        px = x(t)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" class="grid"/><text x="{px:.1f}" '
                   f'y="{bottom + 18}" text-anchor="middle" class="tick">{esc(xfmt(t))}</text>')
    for t in yticks:
        py = y(t)
        out.append(f'<line x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/><text x="{left - 8}" '
                   f'y="{py + 4:.1f}" text-anchor="end" class="tick">{esc(yfmt(t))}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{height - 12}" text-anchor="middle" class="axis">{esc(xlabel)}'
               f'</text><text transform="translate(16 {(top + bottom) / 2}) rotate(-90)" text-anchor="middle" '
               f'class="axis">{esc(ylabel)}</text>')
    return out


def sampled_hull(hull: list[tuple[float, float]], right: float) -> list[tuple[float, float]]:
    """Points to draw a cost/accuracy hull through: 25 samples per segment (linear mixing in cost, so the line is
    right on a log axis too), then flat to ``right``."""
    pts: list[tuple[float, float]] = []
    for (c0, a0), (c1, a1) in zip(hull, hull[1:], strict=False):
        pts += [(c0 + k / 24 * (c1 - c0), a0 + k / 24 * (a1 - a0)) for k in range(25)]
    pts = pts or list(hull[:1])
    if pts and right > pts[-1][0]:
        pts.append((right, pts[-1][1]))
    return pts


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
        line = " ".join(f"{x(c):.1f},{y(a):.1f}" for c, a in path)
        area = f"{x(path[0][0]):.1f},{y(0):.1f} {line} {x(hi):.1f},{y(0):.1f}"
        out.append(f'<polygon points="{area}" class="hullfill"><title>zero router: random mixing of routes'
                   f'</title></polygon><polyline points="{line}" class="hull"/>')
    front = [p for name in s.frontier for p in pts if p[0] == name]
    if len(front) > 1:
        out.append('<polyline class="frontier" points="' + " ".join(f"{x(c):.1f},{y(a):.1f}" for _, c, a, _ in front)
                   + '"/>')
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


def label_position(px: float, py: float, w: float, points: list[tuple[float, float]],
                   boxes: list[tuple[float, float, float, float]], area: tuple[float, float, float, float],
                   ) -> tuple[float, float, str]:
    """Where a point's label goes: the first of right / left / above / below (then further out) whose box stays in
    ``area`` and overlaps no other point and no label placed before; the box is added to ``boxes``."""
    h = 16.0
    candidates = []
    for d in (0, 22, 44):
        candidates += [(px + 12, py - 8 - d, "start"), (px - 12, py - 8 - d, "end"), (px + 12, py + 8 + d, "start"),
                       (px - 12, py + 8 + d, "end"), (px - w / 2, py - 16 - d, "middle"), (px - w / 2, py + 28 + d,
                                                                                              "middle")]
    for bx, by, anchor in candidates:
        x0 = bx if anchor == "start" else bx - w if anchor == "end" else bx
        box = (x0, by - h + 4, x0 + w, by + 4)
        inside = box[0] >= area[0] and box[2] <= area[2] and box[1] >= area[1] and box[3] <= area[3]
        hits_pt = any(box[0] - 9 < qx < box[2] + 9 and box[1] - 9 < qy < box[3] + 9 for qx, qy in points)
        hits_box = any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes)
        if inside and not hits_pt and not hits_box:
            boxes.append(box)
            return (bx + w / 2 if anchor == "middle" else bx), by, anchor
    return px + 12, py - 8, "start"


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

CSS = """
:root{--fg:#1f2430;--muted:#6b7280;--line:#e5e7eb;--bg:#f7f8fa;--card:#fff}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1040px;margin:0 auto;padding:28px 20px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
.sub{color:var(--muted);margin-bottom:20px}.muted{color:var(--muted);fill:var(--muted);font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;margin-bottom:18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:650;margin-top:2px}.card .d{color:var(--muted);font-size:12px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{padding:6px 8px;text-align:right;
border-bottom:1px solid var(--line);vertical-align:top}th{color:var(--muted);font-weight:600;font-size:12px}
td:first-child,th:first-child{text-align:left}th{vertical-align:bottom}tr.front td{background:#fafafa}.ci{color:var(--muted);font-size:12px}
.sw{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:0}
.star{color:#b45309;font-weight:700}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
.plotbg{fill:#fbfbfd}.grid{stroke:#eceef2;stroke-width:1}.tick{font-size:12px;fill:#4b5563}
.axis{font-size:13px;fill:#374151}.label{font-size:13px;font-weight:600;fill:#1f2430;paint-order:stroke;
stroke:#fff;stroke-width:4px}.pt{stroke:#fff;stroke-width:2}.pt.onfront{stroke:#1f2430;stroke-width:2.5}
line.ci{stroke-width:3;opacity:.45}.hullfill{fill:#9ca3af;opacity:.13}.hull{fill:none;stroke:#9ca3af;
stroke-width:1.5;stroke-dasharray:6 4}.frontier{fill:none;stroke:#1f2430;stroke-width:2}
.route{font-size:13px;font-weight:650;fill:#1f2430}.inbar{font-size:11px;fill:#fff;font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:13px;margin:6px 0 10px}
.sample{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:10px 0;background:#fcfcfd}
.sample .q{color:var(--muted);font-size:12px;margin-bottom:6px;white-space:pre-wrap;max-height:4.5em;overflow:hidden}
.gen{font-family:ui-monospace,SFMono-Regular,Menlo,"DejaVu Sans Mono",monospace;font-size:13px;white-space:pre-wrap;
line-height:1.7}.gen span{border-radius:3px;padding:1px 0}
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}
.heat td{font-variant-numeric:tabular-nums}
"""

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
