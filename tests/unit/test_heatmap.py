"""The SVG heatmap writer (tracer/latency/heatmap.py): valid XML, one cell per (column, bucket)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from audtrace.tracer.latency.heatmap import EMPTY, Column, Panel, cell_count, colour, render

SVG = "{http://www.w3.org/2000/svg}"


def cells(doc: str) -> list[ET.Element]:
    root = ET.fromstring(doc.encode())
    assert root.tag == f"{SVG}svg"
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]


def test_one_cell_per_column_and_bucket_counts_kept():
    cols = [Column(0, 1, {22: 5}), Column(1, 2, {}), Column(2, 3, {25: 3, 22: 1})]
    doc = render([Panel("nanosleep", cols)], "t")
    got = cells(doc)
    assert len(got) == 3 * 4 == cell_count([Panel("nanosleep", cols)])  # slots 22..25
    assert sum(int(c.get("data-count")) for c in got) == 9
    by = {(c.get("data-start"), int(c.get("data-slot"))): int(c.get("data-count")) for c in got}
    assert by[("0.000", 22)] == 5 and by[("2.000", 25)] == 3 and by[("1.000", 23)] == 0
    # higher latency is drawn higher: smaller y
    y = {int(c.get("data-slot")): float(c.get("y")) for c in got if c.get("data-start") == "0.000"}
    assert y[25] < y[24] < y[23] < y[22]
    # columns left to right, no overlap
    xs = sorted({float(c.get("x")) for c in got})
    assert len(xs) == 3 and xs[0] < xs[1] < xs[2]


def test_panels_stack_and_count_separately():
    a = Panel("read", [Column(0, 1, {10: 1}), Column(1, 2, {12: 2})])  # 2 cols x 3 rows
    b = Panel("write", [Column(0, 1, {5: 1}), Column(1, 2, {})])  # 2 cols x 1 row
    doc = render([a, b], "two")
    assert len(cells(doc)) == 6 + 2 == cell_count([a, b])


def test_empty_run_is_still_valid_svg():
    doc = render([Panel("read", [Column(0, 1, {})])], "nothing")
    assert cells(doc) == []
    assert "no calls were traced" in doc


def test_names_are_escaped():
    doc = render([Panel('f<&>"x', [Column(0, 1, {3: 1})])], 'title <&> "q"')
    root = ET.fromstring(doc.encode())
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert 'title <&> "q"' in texts and 'f<&>"x' in texts


def test_colour_scale():
    assert colour(0, 10) == EMPTY
    assert colour(10, 10) == "#800026"  # the darkest stop at the peak
    assert colour(1, 1) == "#800026"

    # darker (lower luminance) with more calls
    def lum(c: str) -> float:
        r, g, b = (int(c[i : i + 2], 16) for i in (1, 3, 5))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    shades = [lum(colour(n, 1000)) for n in (1, 3, 10, 30, 100, 300, 1000)]
    assert shades == sorted(shades, reverse=True) and len(set(shades)) == len(shades)
