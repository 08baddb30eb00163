"""What kernel audit rules add to each call: the histograms of windows with the rules and of
windows without them, compared (`audtrace latency --audit-cost`, tracer/latency/audit_cost.py).

Pure: windows in, figures and text or JSON out. The exact figure is the mean (count and sum
are exact); p50 and p99 are interpolated inside log2 buckets, so their difference is exact
only to a bucket's width. How far the figure moves from round to round is the noise.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from audtrace.compat.rules import Rule
from audtrace.tracer.latency.histogram import Histogram, bounds, format_ns, summary_line

METHOD = ("each call timed from sys_enter to sys_exit, between which the kernel runs audit's"
          " work for it (rule matching, record building; a full backlog makes it wait);"
          " windows with the rules loaded (audit enabled for them if it was off) and without"
          " them alternate, ABBA over the rounds, so drift falls on both alike; records are"
          " written out by kauditd afterwards, outside the call")
NOISE = ("noise: the range of the per-round differences of the mean; p50/p99 are interpolated"
         " inside log2 buckets (within a factor of 2), the mean is exact")


@dataclass
class Window:
    round: int
    with_rules: bool
    seconds: float
    hists: dict[int, Histogram] = field(default_factory=dict)     # nr -> histogram


def signed_ns(ns: float | None) -> str:
    if ns is None:
        return "n/a"
    return ("+" if ns >= 0 else "-") + format_ns(abs(ns))


@dataclass
class Entry:
    """One syscall: both conditions merged over the rounds, and the per-round differences."""
    nr: int
    name: str
    without: Histogram
    with_: Histogram
    round_added_mean: list[float]          # mean with - mean without, per complete round
    named_by: int = 0                      # rules naming this syscall (or every syscall)
    rules: int = 0                         # rules compared

    @property
    def added_mean(self) -> float | None:
        a, b = self.with_.mean(), self.without.mean()
        return None if a is None or b is None else a - b

    def added(self, q: float) -> float | None:
        a, b = self.with_.percentile(q), self.without.percentile(q)
        return None if a is None or b is None else a - b

    def shares(self) -> list[tuple[int, float, float]]:
        """(slot, share of calls without, share with) from the lowest to the highest slot
        either holds, empty ones included."""
        slots = set(self.without.buckets) | set(self.with_.buckets)
        if not slots:
            return []
        nw, nf = self.with_.bucket_total() or 1, self.without.bucket_total() or 1
        return [(k, self.without.buckets.get(k, 0) / nf, self.with_.buckets.get(k, 0) / nw)
                for k in range(min(slots), max(slots) + 1)]

    def applies(self) -> str:
        """Whether the rules select this syscall at all: if none does, what they add is
        audit's work on every syscall of an audited task, not the rules' own."""
        if not self.named_by:
            return (f"no rule names {self.name}: what is added is audit's own work on every"
                    " syscall of an audited task while it has rules")
        return f"{self.named_by} of {self.rules} rules apply to {self.name}"

    def to_json(self) -> dict:
        spread = self.round_added_mean
        return {
            "nr": self.nr, "name": self.name, "kind": "syscall",
            "rules_applying": self.named_by,
            "without": self.without.to_json(), "with": self.with_.to_json(),
            "added_ns": {"mean": _round(self.added_mean), "p50": _round(self.added(50)),
                         "p99": _round(self.added(99))},
            "rounds_added_mean_ns": [round(x) for x in spread],
            "difference": [{"slot": k, "lo_ns": bounds(k)[0], "hi_ns": bounds(k)[1],
                            "without_share": round(a, 6), "with_share": round(b, 6),
                            "difference": round(b - a, 6)} for k, a, b in self.shares()],
        }


def _round(x: float | None) -> int | None:
    return None if x is None else round(x)


def names(rule: Rule, nr: int, arch: int) -> bool:
    """Whether the rule's syscall list selects syscall `nr` of `arch` (an exit rule without
    -S, or a watch, selects every syscall; other lists select none)."""
    if not rule.takes_syscalls() or rule.arch not in (None, arch):
        return False
    return not rule.syscalls or nr in rule.syscalls


def compare(windows: list[Window], timed: dict[int, str], rules: list[Rule] | tuple = (),
            arch: int | None = None) -> list[Entry]:
    """Entries for the timed syscalls (nr -> name, of `arch`), in that order."""
    out = []
    for nr, name in timed.items():
        sides = {True: Histogram(), False: Histogram()}
        per_round: dict[int, dict[bool, Histogram]] = {}
        for w in windows:
            h = w.hists.get(nr)
            if h is None:
                continue
            sides[w.with_rules].merge(h)
            per_round.setdefault(w.round, {}).setdefault(w.with_rules, Histogram()).merge(h)
        diffs = []
        for r in sorted(per_round):
            a, b = per_round[r].get(True), per_round[r].get(False)
            if a and b and a.count and b.count:
                diffs.append(a.mean() - b.mean())
        named = sum(names(r, nr, arch) for r in rules) if arch is not None else 0
        out.append(Entry(nr, name, sides[False], sides[True], diffs, named, len(rules)))
    return out


def text(entries: list[Entry], head: list[str], width: int = 30) -> str:
    lines = list(head)
    lines += [f"   ({METHOD})", f"   ({NOISE})"]
    for e in entries:
        lines.append(f"{e.name}: added per call: mean {signed_ns(e.added_mean)}, p50"
                     f" {signed_ns(e.added(50))}, p99 {signed_ns(e.added(99))}"
                     + _spread(e.round_added_mean))
        lines.append(f"    ({e.applies()})")
        lines.append(f"    without the rules: {summary_line(e.without)}")
        lines.append(f"    with the rules:    {summary_line(e.with_)}")
        if not (e.with_.count and e.without.count):
            lines.append("    (no calls in one of the conditions: nothing to compare; run the"
                         " load during the measurement, or --load)")
            continue
        lines.append(f"    {'latency':>19}  {'without':>8} {'with':>8}  with - without")
        for k, a, b in _trimmed(e.shares()):
            lo, hi = bounds(k)
            d = b - a
            bar = ("+" if d > 0 else "-") * round(abs(d) * width)
            lines.append(f"    {format_ns(lo):>8} .. {format_ns(hi):<8} {a:>8.1%} {b:>8.1%}"
                         f"  {d:>+7.1%} {bar}")
    return "\n".join(lines) + "\n\n"


def _trimmed(rows: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
    """Without the rows at either end that show 0.0% on both sides (a lone slow call)."""
    def shown(r: tuple[int, float, float]) -> bool:
        return r[1] >= 0.0005 or r[2] >= 0.0005
    keep = [i for i, r in enumerate(rows) if shown(r)]
    return rows[keep[0]:keep[-1] + 1] if keep else rows


def _spread(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return ""
    return (f" (mean per round: median {signed_ns(statistics.median(diffs))}, from"
            f" {signed_ns(min(diffs))} to {signed_ns(max(diffs))} over {len(diffs)} rounds)")
