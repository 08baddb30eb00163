"""A latency heatmap as SVG: time on x, log2 latency buckets on y, colour by count.

One panel per traced syscall (or function). Every grid cell is drawn, empty ones in grey, so
a shift of the tail shows as colour moving up a column. Colour follows log(1 + count), so a
few slow calls stay visible beside thousands of fast ones. Each cell is a `<rect
class="cell">` with `data-*` attributes and a `<title>` tooltip; nothing else has that class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from audtrace.tracer.latency.histogram import bounds, format_ns

# light yellow to dark red (a sequential scale readable in grey too)
PALETTE = ((255, 255, 204), (254, 217, 118), (253, 141, 60), (227, 26, 28), (128, 0, 38))
EMPTY = "#f2f2f2"
CELL_H = 14
LEFT, TOP, RIGHT, PANEL_GAP = 70, 40, 20, 50
PLOT_W = 800


@dataclass
class Column:
    start: float                    # seconds since the start of the run
    end: float
    counts: dict[int, int] = field(default_factory=dict)   # slot -> calls


@dataclass
class Panel:
    name: str
    columns: list[Column]

    def slots(self) -> range:
        used = [k for c in self.columns for k, n in c.counts.items() if n]
        return range(min(used), max(used) + 1) if used else range(0)


def colour(n: int, peak: int) -> str:
    if n <= 0 or peak <= 0:
        return EMPTY
    x = math.log1p(n) / math.log1p(peak)            # 0 < x <= 1
    pos = x * (len(PALETTE) - 1)
    i = min(int(pos), len(PALETTE) - 2)
    f = pos - i
    rgb = [round(a + (b - a) * f) for a, b in zip(PALETTE[i], PALETTE[i + 1], strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _tag(name: str, attrs: dict[str, object], body: str = "") -> str:
    text = "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
    return f"<{name}{text}>{body}</{name}>" if body else f"<{name}{text}/>"


def _text(x: float, y: float, s: str, **attrs: object) -> str:
    return _tag("text", {"x": f"{x:.1f}", "y": f"{y:.1f}", **attrs}, escape(s))


def cell_count(panels: list[Panel]) -> int:
    return sum(len(p.columns) * len(p.slots()) for p in panels)


def render(panels: list[Panel], title: str) -> str:
    """The whole SVG document."""
    shown = [p for p in panels if p.columns and len(p.slots())]
    peak = max((n for p in shown for c in p.columns for n in c.counts.values()), default=0)
    parts: list[str] = []
    y = TOP
    for p in shown:
        y = _panel(parts, p, y, peak) + PANEL_GAP
    if not shown:
        parts.append(_text(LEFT, y + 20, "no calls were traced"))
        y += 40
    legend_y = y
    parts.append(_legend(legend_y, peak))
    height = legend_y + 40
    width = LEFT + PLOT_W + RIGHT
    head = _text(LEFT, 22, title, **{"font-size": 14, "font-weight": "bold"})
    body = head + "".join(parts)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + _tag("svg", {"xmlns": "http://www.w3.org/2000/svg", "width": width,
                           "height": height, "viewBox": f"0 0 {width} {height}",
                           "font-family": "sans-serif", "font-size": 10}, body) + "\n")


def _panel(parts: list[str], p: Panel, top: float, peak: int) -> float:
    slots = p.slots()
    cols = p.columns
    t0, t1 = cols[0].start, cols[-1].end
    span = max(t1 - t0, 1e-9)
    parts.append(_text(LEFT, top - 6, p.name, **{"font-weight": "bold"}))
    bottom = top + len(slots) * CELL_H
    for c in cols:
        x = LEFT + (c.start - t0) / span * PLOT_W
        w = max((c.end - c.start) / span * PLOT_W, 0.5)
        for row, k in enumerate(reversed(slots)):
            n = c.counts.get(k, 0)
            lo, hi = bounds(k)
            tip = (f"{p.name}: {c.start:.2f}s..{c.end:.2f}s, {format_ns(lo)}..{format_ns(hi)}:"
                   f" {n} calls")
            parts.append(_tag("rect", {
                "class": "cell", "x": f"{x:.2f}", "y": top + row * CELL_H, "width": f"{w:.2f}",
                "height": CELL_H, "fill": colour(n, peak), "data-start": f"{c.start:.3f}",
                "data-end": f"{c.end:.3f}", "data-slot": k, "data-count": n,
            }, _tag("title", {}, escape(tip))))
    for row, k in enumerate(reversed(slots)):   # y axis: each bucket's lower bound
        parts.append(_text(LEFT - 4, top + row * CELL_H + CELL_H - 3, format_ns(bounds(k)[0]),
                           **{"text-anchor": "end"}))
    step = _nice_step(span)
    t = 0.0
    while t <= span + 1e-9:                        # x axis: seconds since the start
        x = LEFT + t / span * PLOT_W
        parts.append(_tag("line", {"x1": f"{x:.1f}", "x2": f"{x:.1f}", "y1": bottom,
                                   "y2": bottom + 4, "stroke": "black"}))
        parts.append(_text(x, bottom + 14, f"{t0 + t:g}s", **{"text-anchor": "middle"}))
        t += step
    return bottom + 16


def _nice_step(span: float) -> float:
    raw = span / 8
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _legend(y: float, peak: int) -> str:
    out = [_text(LEFT, y + 10, "calls per cell (log scale):")]
    x = LEFT + 130
    marks = sorted({1, max(1, round(math.sqrt(peak))), peak}) if peak else [0]
    for n in marks:
        out.append(_tag("rect", {"class": "legend", "x": x, "y": y, "width": 14, "height": 14,
                                 "fill": colour(n, peak)}))
        out.append(_text(x + 18, y + 11, str(n)))
        x += 60
    return "".join(out)
