"""The benchmark's own logic, free of any system access (unit-tested in tests/unit/).

- `schedule`: the order of conditions in each round, a Williams design, so slow drift of a
  shared machine and the after-effects of one condition on the next (warm caches, a kernel
  thread still draining) fall evenly on every condition;
- `ratios` / `summarize`: each condition against the baseline measured in the *same* round,
  then the median over rounds, because absolute times move between rounds and machines;
- `no_loss_rate`: the highest storm rate a tracer kept up with, and what it lost above it;
- `table`: the text table printed at the end.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def williams_row(n: int, i: int) -> list[int]:
    """Row i of a Williams square of order n: 0, 1, n-1, 2, n-2, ... shifted by i (mod n)."""
    first, lo, hi = [0], 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    return [(x + i) % n for x in first]


def schedule(conditions: Sequence[str], rounds: int) -> list[list[str]]:
    """Each round runs every condition once. Over n rounds (n conditions, n even) every
    condition takes every position once and follows every other condition exactly once;
    with odd n the mirrored rows are interleaved to restore the balance over 2n rounds."""
    n = len(conditions)
    if n == 0 or rounds <= 0:
        return []
    rows: list[list[int]] = []
    for i in range(rounds):
        k = i if n % 2 == 0 else i // 2
        row = williams_row(n, k % n)
        if n % 2 == 1 and i % 2 == 1:
            row = row[::-1]
        rows.append(row)
    return [[conditions[j] for j in row] for row in rows]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("nothing to summarize")
    return Summary(median(values), min(values), max(values), len(values))


def ratios(rounds: Sequence[Mapping[str, float]], baseline: str) -> dict[str, list[float]]:
    """Per condition, its value divided by the baseline's of the same round. A round without
    a baseline value gives no ratio (nothing to compare it with)."""
    out: dict[str, list[float]] = {}
    for r in rounds:
        base = r.get(baseline)
        if not base:
            continue
        for cond, value in r.items():
            out.setdefault(cond, []).append(value / base)
    return out


def added(rounds: Sequence[Mapping[str, float]], baseline: str) -> dict[str, list[float]]:
    """Per condition, what it adds to the baseline of the same round (ns per call)."""
    out: dict[str, list[float]] = {}
    for r in rounds:
        if baseline not in r:
            continue
        for cond, value in r.items():
            out.setdefault(cond, []).append(value - r[baseline])
    return out


def overhead_share(
    rounds: Sequence[Mapping[str, float]], baseline: str, ours: str, theirs: str
) -> list[float]:
    """Per round, ours' added cost as a fraction of theirs' (0.5: half of what theirs adds).
    Rounds where theirs adds nothing measurable are skipped: the fraction would be noise."""
    out = []
    for r in rounds:
        if not all(k in r for k in (baseline, ours, theirs)):
            continue
        theirs_added = r[theirs] - r[baseline]
        if theirs_added > 0:
            out.append((r[ours] - r[baseline]) / theirs_added)
    return out


@dataclass(frozen=True)
class Step:
    """One storm at one rate, seen by one tracer."""

    rate: float  # requested signals per second, all senders together
    sent: int  # kill() calls that succeeded
    seconds: float  # how long the senders took
    recorded: int  # events the tracer wrote for these senders
    reported_lost: int  # what the tracer itself says it lost

    @property
    def achieved(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def missing(self) -> int:
        return max(self.sent - self.recorded, 0)

    def kept_up(self, min_pace: float = 0.9) -> bool:
        """Nothing missing, nothing reported lost, and the senders were not held back (kernel
        audit makes a sender wait when its backlog is full: no loss, but no storm either)."""
        return (
            self.missing == 0 and self.reported_lost == 0 and self.achieved >= min_pace * self.rate
        )


def no_loss_rate(steps: Sequence[Step], min_pace: float = 0.9) -> tuple[float, list[Step]]:
    """The highest rate kept up with, counting only the unbroken run of rates from the lowest
    (a lucky higher step after a failed one does not count), and the steps above it."""
    best = 0.0
    ordered = sorted(steps, key=lambda s: s.rate)
    for i, s in enumerate(ordered):
        if not s.kept_up(min_pace):
            return best, ordered[i:]
        best = s.rate
    return best, []


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns left-aligned, floats with 2 decimals."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return "-" if v is None else str(v)

    cells = [[cell(v) for v in header]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
