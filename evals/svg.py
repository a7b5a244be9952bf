"""SVG plot primitives and the stylesheet shared by the eval pages (``evals.report``, ``evals.replay_report``).

Scales (:class:`Axis`, linear or log10, and :func:`cost_axis` choosing between them), round tick values, a plot's
frame (background, grid, tick labels, axis titles), the sampled zero-router hull line, label placement that avoids
points and earlier labels, polyline point lists, the colour palette, HTML escaping and the number formats the plots
and tables share ($, %, seconds). Everything returns strings of SVG or HTML; nothing here knows a run or a replay.

What it leaves out: the charts themselves (each page draws its own from these parts), JavaScript, and any external
resource (the pages are self-contained).
"""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["CSS", "PALETTE", "Axis", "colours", "cost_axis", "esc", "fmt_money", "fmt_pct", "fmt_s", "label_position",
           "nice_ticks", "plot_frame", "points_attr", "sampled_hull"]


PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D", "#FF9DA6",
           "#BAB0AC"]


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


def points_attr(points: list[tuple[float, float]], x: Axis, y: Axis) -> str:
    """The ``points`` attribute of a polyline through data ``points`` (pixels to one decimal)."""
    return " ".join(f"{x(c):.1f},{y(a):.1f}" for c, a in points)


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


# ------------------------------------------------------------------------------------------------ page style

# The stylesheet of both pages: cards, sections, tables, legends, and the classes the primitives above emit
# (plotbg, grid, tick, axis) and the charts use (pt, label, ci, hull, hullfill, frontier, route, inbar).
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
