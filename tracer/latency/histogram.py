"""Log2 latency histograms: bucket bounds, percentiles, durations, and how a person reads them.

The BPF side (bpf/latency.c) counts each latency in slot `ns.bit_length()`: slot 0 holds 0 ns,
slot k >= 1 holds [2^(k-1), 2^k) ns, so every bucket spans a factor of two. Count, sum, min and
max are kept exactly beside the buckets. Percentiles are interpolated linearly inside the
bucket that holds the rank, then clamped to [min, max]: the true value lies in the same bucket,
so the error is at most the bucket's width, which the output says.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

PERCENTILES = (50, 90, 99)
NOTE = ("percentiles are interpolated inside log2 buckets (true value in the same bucket,"
        " within a factor of 2); count, min and max are exact")

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)\s*")


def slot(ns: int) -> int:
    return max(int(ns), 0).bit_length()


def bounds(k: int) -> tuple[int, int]:
    """Slot k covers [lo, hi) nanoseconds."""
    return (0, 1) if k == 0 else (1 << (k - 1), 1 << k)


def parse_duration(text: str) -> int:
    """'10ms', '500us', '1.5s', '250ns' -> nanoseconds. A unit is required: a bare number
    would be read as seconds by one person and nanoseconds by another."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (say 10ms, 500us, 1.5s or 250ns)")
    ns = round(float(m.group(1)) * _UNITS[m.group(2)])
    if ns <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return ns


def format_ns(ns: float) -> str:
    """Three significant digits in the largest unit that keeps the number >= 1."""
    for unit, size in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= size:
            v = ns / size
            # '#' keeps trailing zeros (2.10ms, not 2.1ms); then drop a bare trailing point
            return (f"{v:#.3g}".rstrip(".") if v < 1000 else f"{v:.0f}") + unit
    return f"{ns:.0f}ns"


@dataclass
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)   # slot -> count
    count: int = 0
    sum_ns: int = 0
    min_ns: int | None = None
    max_ns: int = 0

    def observe(self, ns: int) -> None:
        """One latency, as the BPF side records it."""
        k = slot(ns)
        self.buckets[k] = self.buckets.get(k, 0) + 1
        self.add_stats(1, ns, ns, ns)

    def add_stats(self, count: int, sum_ns: int, min_ns: int, max_ns: int) -> None:
        if count <= 0:
            return
        self.count += count
        self.sum_ns += sum_ns
        self.min_ns = min_ns if self.min_ns is None else min(self.min_ns, min_ns)
        self.max_ns = max(self.max_ns, max_ns)

    def add_bucket(self, k: int, n: int) -> None:
        if n:
            self.buckets[k] = self.buckets.get(k, 0) + n

    def merge(self, other: Histogram) -> None:
        for k, n in other.buckets.items():
            self.add_bucket(k, n)
        if other.count:
            self.add_stats(other.count, other.sum_ns, other.min_ns or 0, other.max_ns)

    def bucket_total(self) -> int:
        return sum(self.buckets.values())

    def percentile_slot(self, q: float) -> int | None:
        """The slot holding the value of rank ceil(q/100 * n) (nearest rank)."""
        total = self.bucket_total()
        if not total:
            return None
        rank = max(1, math.ceil(q * total / 100))   # multiply first: 90*10/100 is 9.0
        seen = 0
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen >= rank:
                return k
        return max(self.buckets)

    def percentile(self, q: float) -> float | None:
        """Interpolated inside the bucket of the nearest rank, clamped to [min, max]."""
        total = self.bucket_total()
        if not total:
            return None
        rank = q * total / 100
        seen = 0
        for k in sorted(self.buckets):
            n = self.buckets[k]
            if n and seen + n >= rank:
                lo, hi = bounds(k)
                value = lo + (hi - lo) * max(rank - seen, 0) / n
                break
            seen += n
        else:
            value = float(bounds(max(self.buckets))[1])
        if self.count:
            value = min(max(value, float(self.min_ns or 0)), float(self.max_ns))
        return value

    def mean(self) -> float | None:
        return self.sum_ns / self.count if self.count else None

    def to_json(self) -> dict:
        pct = {}
        for q in PERCENTILES:
            k = self.percentile_slot(q)
            pct[f"p{q}"] = None if k is None else {
                "ns": round(self.percentile(q) or 0), "bucket_ns": list(bounds(k))}
        return {
            "count": self.count, "sum_ns": self.sum_ns, "min_ns": self.min_ns,
            "max_ns": self.max_ns if self.count else None,
            "mean_ns": None if not self.count else round(self.sum_ns / self.count),
            "percentiles": pct,
            "buckets": [{"slot": k, "lo_ns": bounds(k)[0], "hi_ns": bounds(k)[1], "count": n}
                        for k, n in sorted(self.buckets.items()) if n],
        }


def summary_line(h: Histogram) -> str:
    if not h.count:
        return "0 calls"
    parts = [f"{h.count} calls"]
    parts += [f"p{q} {format_ns(h.percentile(q) or 0)}" for q in PERCENTILES]
    parts += [f"max {format_ns(h.max_ns)}", f"min {format_ns(h.min_ns or 0)}",
              f"mean {format_ns(h.mean() or 0)}"]
    return "  ".join(parts)


def render(h: Histogram, width: int = 40) -> list[str]:
    """One row per bucket from the lowest to the highest non-empty one, empty ones included
    (the gaps are part of the shape), each with a bar scaled to the fullest bucket."""
    if not h.buckets:
        return []
    lo_k, hi_k = min(h.buckets), max(h.buckets)
    peak = max(h.buckets.values())
    rows = [f"    {'latency':>19}  {'count':>8}"]
    for k in range(lo_k, hi_k + 1):
        n = h.buckets.get(k, 0)
        lo, hi = bounds(k)
        bar = "#" * (math.ceil(n * width / peak) if n else 0)
        rows.append(f"    {format_ns(lo):>8} .. {format_ns(hi):<8} {n:>8} |{bar:<{width}}|")
    return rows
