"""Log2 histogram math, duration parsing and the text a person reads
(tracer/latency/histogram.py)."""

from __future__ import annotations

import math

import pytest
from audtrace.tracer.latency.histogram import (
    Histogram,
    bounds,
    format_ns,
    parse_duration,
    render,
    slot,
)
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "ns, k",
    [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 2),
        (4, 3),
        (1023, 10),
        (1024, 11),
        (20_000_000, 25),
        ((1 << 64) - 1, 64),
    ],
)
def test_slot_is_the_bit_length(ns, k):
    assert slot(ns) == k
    lo, hi = bounds(k)
    assert lo <= ns < hi


def test_buckets_tile_the_line():
    assert bounds(0) == (0, 1)
    for k in range(1, 64):
        assert bounds(k)[0] == bounds(k - 1)[1]
        assert bounds(k)[1] == 2 * bounds(k)[0]


@pytest.mark.parametrize(
    "text, ns",
    [
        ("10ms", 10_000_000),
        ("500us", 500_000),
        ("500µs", 500_000),
        ("1.5s", 1_500_000_000),
        ("250ns", 250),
        (" 2 ms ", 2_000_000),
        (".5ms", 500_000),
    ],
)
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["10", "ms", "10 min", "-1ms", "0ms", "1e3ms", "", "10mss"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "0ns"),
        (999, "999ns"),
        (1000, "1.00us"),
        (2_097_152, "2.10ms"),
        (16_777_216, "16.8ms"),
        (100_000_000, "100ms"),
        (1_500_000_000, "1.50s"),
        (5_000_000_000_000, "5000s"),
    ],
)
def test_format_ns(ns, text):
    assert format_ns(ns) == text


def nearest_rank(values: list[int], q: float) -> int:
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s) / 100)) - 1]


latencies = st.lists(st.integers(min_value=0, max_value=10**11), min_size=1, max_size=300)


@given(latencies, st.sampled_from([1, 10, 50, 90, 99, 99.9, 100]))
def test_percentile_lies_in_the_true_values_bucket_and_within_min_max(values, q):
    h = Histogram()
    for v in values:
        h.observe(v)
    exact = nearest_rank(values, q)
    assert h.percentile_slot(q) == slot(exact)
    p = h.percentile(q)
    assert min(values) <= p <= max(values)
    lo, hi = bounds(slot(exact))
    assert lo <= p <= hi


@given(latencies)
def test_exact_stats(values):
    h = Histogram()
    for v in values:
        h.observe(v)
    assert (h.count, h.sum_ns, h.min_ns, h.max_ns) == (
        len(values),
        sum(values),
        min(values),
        max(values),
    )
    assert h.bucket_total() == len(values)


@given(latencies, latencies)
def test_merge_is_the_histogram_of_both(a, b):
    ha, hb, both = Histogram(), Histogram(), Histogram()
    for v in a:
        ha.observe(v)
        both.observe(v)
    for v in b:
        hb.observe(v)
        both.observe(v)
    ha.merge(hb)
    assert ha == both


def test_percentiles_of_a_known_mix():
    # 70 calls of ~2.5ms, 30 of ~20ms: the median is fast, p90 and p99 are slow
    h = Histogram()
    for i in range(70):
        h.observe(2_500_000 + i)
    for i in range(30):
        h.observe(20_000_000 + i)
    assert bounds(h.percentile_slot(50)) == (2_097_152, 4_194_304)
    assert bounds(h.percentile_slot(90)) == (16_777_216, 33_554_432)
    assert 2_097_152 <= h.percentile(50) < 4_194_304
    # clamped to the exact max rather than the bucket's upper bound
    assert h.percentile(99) <= 20_000_029
    assert h.percentile(99) >= 16_777_216


def test_empty_histogram():
    h = Histogram()
    assert h.percentile(50) is None and h.percentile_slot(50) is None
    assert render(h) == []
    assert h.to_json()["percentiles"]["p50"] is None


def test_render_shows_gaps_and_scales_bars():
    h = Histogram()
    for _ in range(4):
        h.observe(3_000_000)  # slot 22
    h.observe(20_000_000)  # slot 25
    rows = render(h, width=20)
    body = rows[1:]
    assert len(body) == 25 - 22 + 1  # empty buckets between are shown
    bars = [r.split("|")[1] for r in body]
    assert bars[0] == "#" * 20 and bars[1].strip() == "" and bars[3].strip() == "#" * 5
    assert body[0].split()[0] == "2.10ms" and body[-1].split()[2] == "33.6ms"


def test_json_buckets_and_percentile_bounds():
    h = Histogram()
    h.observe(1500)
    h.observe(1600)
    j = h.to_json()
    assert j["buckets"] == [{"slot": 11, "lo_ns": 1024, "hi_ns": 2048, "count": 2}]
    assert j["percentiles"]["p50"]["bucket_ns"] == [1024, 2048]
    assert 1500 <= j["percentiles"]["p50"]["ns"] <= 1600
    assert j["min_ns"] == 1500 and j["max_ns"] == 1600 and j["mean_ns"] == 1550
