"""HTML report of a replay evaluation (`tandem eval replay --report DIR`): one self-contained page, inline SVG.

``render_replay_html(results, meta)`` draws what `evals.replay.run_replay` returned:
- the cost/accuracy curve of every router (its pooled cross-validated hull, flat to the right of its dearest point)
  over the single models' points, the zero router (their hull: random mixing) and the oracle;
- for two-model data (RouteLLM strong/weak), the performance gap recovered against the strong-call share, whose
  area is APGR (the diagonal is random routing, APGR 0.5);
- AIQ per router as bars, with the zero router and the kNN baseline marked;
- the table of every number (AIQ ± fold spread, accuracy and cost at the default point, cost-of-pass, best accuracy,
  cost for 95 % of the best single model, APGR).

Every number on the page is read from ``results``; nothing is computed here but pixel positions.
Left out: interactivity (no JavaScript), per-fold curves, bootstrap intervals.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from evals.metrics import upper_hull
from evals.svg import (
    CSS,
    Axis,
    colours,
    cost_axis,
    esc,
    fmt_money,
    fmt_pct,
    nice_ticks,
    plot_frame,
    points_attr,
    sampled_hull,
)

REFERENCE = ("zero", "oracle")
W, H = 760, 440
ML, MR, MT, MB = 70, 24, 18, 56


def router_names(results: dict[str, dict[str, Any]]) -> list[str]:
    """The routers of a run (not single models, the oracle or the zero router), best AIQ first."""
    names = [k for k in results if k not in REFERENCE and not k.startswith("single:")]
    return sorted(names, key=lambda k: -_num(results[k].get("aiq")))


def swept_routers(results: dict[str, dict[str, Any]]) -> list[str]:
    """The routers whose knob trades cost for accuracy: their sweep's dearest point costs at least twice its
    cheapest. The random / cheapest / best baselines make one point each (spread a little by the folds): they stay
    in the table, off the plots."""
    def span(r: dict[str, Any]) -> float:
        lo, hi = _num(r.get("curve_cost_min_per_1k")), _num(r.get("curve_cost_max_per_1k"))
        return hi / lo if lo > 0 and math.isfinite(hi) else 0.0

    return [k for k in router_names(results) if results[k].get("curve") and span(results[k]) >= 2.0]


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else -math.inf


def _short(model: str) -> str:
    return model.split(":", 1)[-1].rsplit("/", 1)[-1]


def curves_svg(results: dict[str, dict[str, Any]], colour: dict[str, str]) -> str:
    """Cost per 1k requests vs accuracy: the curves of the routers in `colour`, the single models, the zero-router
    hull and the oracle."""
    singles = [(k, r["cost_per_1k"], r["accuracy"]) for k, r in results.items() if k.startswith("single:")]
    curves = {k: [tuple(p) for p in results[k]["curve"]] for k in router_names(results) if k in colour}
    oracle = results.get("oracle")
    # the accuracy axis spans the single models, the oracle and the routers' default points; the pooled curves start
    # below it where some folds' hulls have not begun (those count 0) and are drawn from where they enter the axis
    def finite(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(c, a) for c, a in points if math.isfinite(c) and math.isfinite(a)]

    anchors = finite([(c, a) for _, c, a in singles]
                     + [(results[k]["cost_per_1k"], results[k]["accuracy"]) for k in curves])
    pts = anchors + finite([p for v in curves.values() for p in v])
    if oracle:
        pts += finite([(oracle["cost_per_1k"], oracle["accuracy"])])
    out = [f'<svg class="plot" id="curves" viewBox="0 0 {W} {H}" width="100%" role="img" '
           f'aria-label="cost versus accuracy per router">']
    if not anchors:
        return "".join(out) + f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="muted">no points</text></svg>'
    x = cost_axis([c for c, _ in pts], ML, W - MR, log_pad=1.5, pad=1.1)
    hi = x.hi
    a_lo = max(0.0, math.floor((min(a for _, a in anchors) - 0.02) * 20) / 20)
    a_hi = min(1.0, math.ceil((max(a for _, a in pts) + 0.02) * 20) / 20)
    y = Axis(a_lo, a_hi, H - MB, MT)
    out += plot_frame(x, y, nice_ticks(a_lo, a_hi, 6), fmt_money, lambda t: f"{100 * t:.0f}%",
                      "cost per 1,000 requests" + (" (log scale)" if x.log else ""), "accuracy", H)
    zero = upper_hull([(c, a) for _, c, a in singles])
    if zero:
        line = points_attr(sampled_hull(zero, hi), x, y)
        out.append(f'<polyline points="{line}" class="hull"><title>zero router: random mixing of single models'
                   f"</title></polyline>")
    for k, curve in curves.items():
        shown = [(c, a) for c, a in sampled_hull(upper_hull(curve), hi) if a >= a_lo]
        out.append(f'<polyline points="{points_attr(shown, x, y)}" fill="none" '
                   f'stroke="{colour[k]}" stroke-width="2.2"><title>{esc(k)}: AIQ {results[k]["aiq"]:.4f}</title>'
                   f"</polyline>")
    for k in curves:  # where each router deploys: its default point (the accuracy-share rule)
        c, a = results[k]["cost_per_1k"], results[k]["accuracy"]
        if not (math.isfinite(c) and math.isfinite(a)):
            continue
        rule = results[k].get("default_rule") or {}
        why = f"the cheapest knob reaching {rule['accuracy_share']:g} of the best model" if rule else "default knob"
        out.append(f'<rect class="default-point" x="{x(c) - 5:.1f}" y="{y(a) - 5:.1f}" width="10" height="10" '
                   f'fill="#fff" stroke="{colour[k]}" stroke-width="2.4"><title>{esc(k)} deploys here ({esc(why)}): '
                   f"{fmt_pct(a)} at {esc(fmt_money(c))} / 1k</title></rect>")
    for name, c, a in singles:
        right = x(c) > W - MR - 7.0 * len(_short(name)) - 12  # near the right edge: label on the left
        out.append(f'<circle cx="{x(c):.1f}" cy="{y(a):.1f}" r="5" fill="#6b7280" class="pt"><title>{esc(name)}: '
                   f"{fmt_pct(a)} at {esc(fmt_money(c))} / 1k</title></circle><text x=\"{x(c) + (-8 if right else 7):.1f}\""
                   f' y="{y(a) + 4:.1f}" text-anchor="{"end" if right else "start"}" class="muted">'
                   f"{esc(_short(name))}</text>")
    if oracle:
        ox, oy = x(oracle["cost_per_1k"]), y(oracle["accuracy"])
        out.append(f'<path d="M{ox:.1f},{oy - 8:.1f} L{ox + 7:.1f},{oy + 6:.1f} L{ox - 7:.1f},{oy + 6:.1f} Z" '
                   f'fill="#b45309"><title>oracle: {fmt_pct(oracle["accuracy"])} at '
                   f'{esc(fmt_money(oracle["cost_per_1k"]))} / 1k</title></path><text x="{ox + 9:.1f}" '
                   f'y="{oy + 4:.1f}" class="muted">oracle</text>')
    return "".join(out) + "</svg>"


def pgr_svg(results: dict[str, dict[str, Any]], colour: dict[str, str]) -> str:
    """Performance gap recovered vs strong-call share for the routers in `colour` (two-model data); '' when none has
    that curve."""
    curves = {k: results[k]["pgr_curve"] for k in router_names(results) if k in colour and results[k].get("pgr_curve")}
    if not curves:
        return ""
    ys = [p[1] for v in curves.values() for p in v if math.isfinite(p[1])]
    p_lo, p_hi = min(0.0, math.floor(min(ys) * 10) / 10), max(1.0, math.ceil(max(ys) * 10) / 10)
    x, y = Axis(0.0, 1.0, ML, W - MR), Axis(p_lo, p_hi, H - MB, MT)
    out = [f'<svg class="plot" id="pgr" viewBox="0 0 {W} {H}" width="100%" role="img" '
           f'aria-label="performance gap recovered versus strong-call share">']
    out += plot_frame(x, y, nice_ticks(p_lo, p_hi, 6), lambda t: f"{100 * t:.0f}%", lambda t: f"{t:.1f}",
                      "share of calls to the strong model", "performance gap recovered", H)
    out.append(f'<polyline points="{points_attr([(0.0, 0.0), (1.0, 1.0)], x, y)}" class="hull"><title>random routing '
               f"(APGR 0.5)</title></polyline>")
    for k, v in curves.items():
        out.append(f'<polyline points="{points_attr([(a, b) for a, b in v if math.isfinite(b)], x, y)}" fill="none" '
                   f'stroke="{colour[k]}" stroke-width="2.2"><title>{esc(k)}: APGR {results[k]["apgr"]:.3f}'
                   f"</title></polyline>")
    return "".join(out) + "</svg>"


def aiq_bars_svg(results: dict[str, dict[str, Any]], colour: dict[str, str]) -> str:
    """AIQ of the routers in `colour` (horizontal bars), the zero router and the kNN baseline as vertical lines."""
    names = [k for k in router_names(results) if k in colour and math.isfinite(_num(results[k].get("aiq")))]
    zero = _num(results.get("zero", {}).get("aiq"))
    refs = [(label, v) for label, v in (("zero router", zero), ("kNN", _num(results.get("knn", {}).get("aiq"))))
            if math.isfinite(v)]
    if not names:
        return ""
    vals = [results[k]["aiq"] for k in names]
    near = [v for v in vals + [v for _, v in refs] if v >= 0.5 * max(vals)]  # single-point baselines score ~0
    lo = max(0.0, math.floor((min(near) - 0.02) * 50) / 50)
    hi = min(1.0, math.ceil((max(near) + 0.01) * 50) / 50)
    row, left, right = 22, 170, 90
    height = MT + row * len(names) + 40 + 14 * len(refs)
    x = Axis(lo, hi, left, W - right)
    out = [f'<svg class="plot" id="aiq" viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="AIQ per '
           f'router"><rect x="{left}" y="{MT}" width="{W - left - right}" height="{row * len(names)}" class="plotbg"/>']
    for t in nice_ticks(lo, hi, 6):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{MT}" y2="{MT + row * len(names)}" class="grid"/>'
                   f'<text x="{x(t):.1f}" y="{MT + row * len(names) + 16}" text-anchor="middle" class="tick">'
                   f"{t:.2f}</text>")
    for i, (k, v) in enumerate(zip(names, vals, strict=True)):
        top = MT + i * row + 4
        width = max(0.0, x(max(v, lo)) - left)
        out.append(f'<text x="{left - 8}" y="{top + 12}" text-anchor="end" class="route">{esc(k)}</text>'
                   f'<rect x="{left}" y="{top}" width="{width:.1f}" height="{row - 8}" fill="{colour[k]}" rx="3">'
                   f'<title>{esc(k)}: AIQ {v:.4f}</title></rect><text x="{left + width + 6:.1f}" y="{top + 12}" '
                   f'class="tick">{v:.4f}</text>')
    for j, (label, v) in enumerate(refs):
        if lo <= v <= hi:
            out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{MT - 4}" y2="{MT + row * len(names)}" '
                       f'stroke="#1f2430" stroke-dasharray="{"6 4" if j == 0 else "2 3"}" stroke-width="1.5"/>'
                       f'<text x="{x(v):.1f}" y="{MT + row * len(names) + 32 + 14 * j}" text-anchor="middle" '
                       f'class="muted">{esc(label)} {v:.4f}</text>')
    return "".join(out) + "</svg>"


def _rule_text(results: dict[str, dict[str, Any]]) -> str:
    rule = next((r["default_rule"] for r in results.values() if r.get("default_rule")), None)
    if not rule:
        return "the router's default knob"
    return (f"the cheapest knob reaching {rule['accuracy_share']:g} of the best single model's accuracy, chosen "
            f"without the scored fold's labels")


def _cell(v: Any, kind: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if kind == "money":
        return fmt_money(v)
    if kind == "pct":
        return "∞" if isinstance(v, float) and math.isinf(v) else fmt_pct(v)
    return f"{v:{kind}}"


def table_html(results: dict[str, dict[str, Any]], colour: dict[str, str]) -> str:
    head = ("router", "AIQ", "± folds", "accuracy", "$ / 1k", "$ / pass ×1k", "best acc.", "cost for 95 % of best",
            "APGR")
    kinds = (".4f", ".4f", "pct", "money", "money", "pct", "pct", ".3f")
    keys = ("aiq", "aiq_fold_std", "accuracy", "cost_per_1k", "cost_of_pass", "max_accuracy",
            "cost_share_for_95pct_best", "apgr")
    order = router_names(results) + [k for k in REFERENCE if k in results] + sorted(
        k for k in results if k.startswith("single:"))
    rows = []
    for k in order:
        r = dict(results[k])
        if r.get("cost_of_pass") is not None:
            r["cost_of_pass"] = 1000 * r["cost_of_pass"]
        sw = f'<span class="sw" style="background:{colour[k]}"></span>' if k in colour else ""
        label = {"zero": "zero router (random mixing)", "oracle": "oracle (best model per query)"}.get(k, k)
        rows.append(f"<tr><td>{sw}{esc(label)}</td>" + "".join(
            f"<td>{esc(_cell(r.get(key), kind))}</td>" for key, kind in zip(keys, kinds, strict=True)) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def render_replay_html(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """The page. ``meta``: ``source``, ``rows``, ``models``, ``folds`` (or ``test_rows``), ``seed``, ``command``."""
    names = router_names(results)
    colour = colours(swept_routers(results))
    zero = results.get("zero", {})
    best = names[0] if names else None
    reach = [k for k in names if math.isfinite(_num(results[k].get("cost_share_for_95pct_best")))]
    cheap = min(reach, key=lambda k: results[k]["cost_share_for_95pct_best"], default=None)
    how = (f"{meta['folds']}-fold cross-validation" if meta.get("folds") else f"held-out test ({meta.get('test_rows')}"
           f" rows)")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tandem replay · "
             f"{esc(meta.get('source', ''))}</title><meta name=\"viewport\" content=\"width=device-width, "
             f"initial-scale=1\"><style>{CSS}h1{{overflow-wrap:anywhere}}</style></head><body><main>",
             f"<h1>Router replay · {esc(meta.get('source', ''))}</h1><div class=\"sub\">{meta.get('rows', '?')} prompts"
             f" · {len(meta.get('models', []))} models · {esc(how)} · seed {meta.get('seed', 0)} · "
             f"{esc(time.strftime('%Y-%m-%d %H:%M'))}<br><code>{esc(meta.get('command', ''))}</code></div>"]
    cards = []
    if best:
        cards.append(("best AIQ", f"{results[best]['aiq']:.4f}", f"{best}; zero router {_num(zero.get('aiq')):.4f}"))
    if cheap:
        cards.append(("cost for 95 % of the best model", fmt_pct(results[cheap]["cost_share_for_95pct_best"]),
                      f"{cheap}; zero router {fmt_pct(zero.get('cost_share_for_95pct_best', math.nan))}"))
    if best and math.isfinite(_num(results[best].get("default_cost_share"))):
        r = results[best]
        share = (r.get("default_rule") or {}).get("accuracy_share")
        cards.append((f"where {best} deploys", f"{fmt_pct(r['default_cost_share'])} of the cost",
                      f"of the dearest model, at {fmt_pct(r['default_accuracy_share'])} of the best model's accuracy"
                      + (f" (rule: {share:g} of it)" if share is not None else "")))
    apgrs = [k for k in names if results[k].get("apgr") is not None]
    if apgrs:
        k = max(apgrs, key=lambda n: results[n]["apgr"])
        cards.append(("best APGR", f"{results[k]['apgr']:.3f}", f"{k}; random routing 0.500"))
    if "oracle" in results:
        cards.append(("oracle AIQ", f"{results['oracle']['aiq']:.4f}", "the best model per query, known in advance"))
    parts.append('<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div><div class="d">{esc(d)}</div>'
        f"</div>" for k, v, d in cards) + "</div>")
    legend = "".join(f'<span><span class="sw" style="background:{c}"></span>{esc(k)}</span>' for k, c in colour.items())
    single = [k for k in names if k not in colour]
    if single:
        legend += f'<span style="color:#6b7280">one point each, in the table: {esc(", ".join(single))}</span>'
    parts.append(f'<section><h2>Cost vs accuracy, across each router\'s knob</h2><div class="legend">{legend}'
                 f'<span style="color:#6b7280">- - zero router · ● single models · ▲ oracle · □ where each router '
                 f'deploys</span></div>'
                 f"{curves_svg(results, colour)}</section>")
    pgr = pgr_svg(results, colour)
    if pgr:
        parts.append(f'<section><h2>Performance gap recovered vs strong-call share (area = APGR)</h2>'
                     f'<div class="legend">{legend}<span style="color:#6b7280">- - random routing</span></div>'
                     f"{pgr}</section>")
    parts.append(f"<section><h2>AIQ (RouterBench's: area under the cost/accuracy hull up to the dearest model's "
                 f"cost, divided by that cost)</h2>"
                 f"{aiq_bars_svg(results, colour)}</section>")
    parts.append(f"<section><h2>Numbers</h2>{table_html(results, colour)}<p class=\"muted\">Accuracy and cost are at "
                 f"each router's default point ({esc(_rule_text(results))}); AIQ, best accuracy and cost for 95 % come from its "
                 f"whole curve. A single model's AIQ is its accuracy × (1 − its cost / the dearest model's), 0 for the "
                 f"dearest.</p></section></main></body></html>")
    return "".join(parts)


def write_replay_report(results: dict[str, dict[str, Any]], meta: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``replay.html`` into ``out_dir`` (created) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "replay.html"
    path.write_text(render_replay_html(results, meta), encoding="utf-8")
    return path
