"""What audit rules add per call, from windows with and without them
(tracer/latency/comparison.py), and the order of the windows (tracer/latency/audit_cost.py)."""

from __future__ import annotations

import orjson
import pytest
from audtrace.compat import rules as audit_rules
from audtrace.compat import tables
from audtrace.tracer.latency.audit_cost import schedule
from audtrace.tracer.latency.comparison import Window, compare, names, text
from audtrace.tracer.latency.histogram import Histogram
from hypothesis import given
from hypothesis import strategies as st


def rule(text: str) -> audit_rules.Rule:
    return audit_rules.parse_args(audit_rules.split_line(text)).rule


B64 = rule("-a always,exit -F arch=b64 -S getppid").arch
GETPPID, GETPID = (tables.syscall_number(B64, n) for n in ("getppid", "getpid"))


def hist(*values: int) -> Histogram:
    h = Histogram()
    for v in values:
        h.observe(v)
    return h


def test_schedule_alternates_abba():
    assert schedule(3) == [(0, True), (0, False), (1, False), (1, True), (2, True), (2, False)]
    # each condition equally often, and never twice in a row within a round
    s = schedule(8)
    assert sum(w for _r, w in s) == 8
    assert all(s[2 * i][1] != s[2 * i + 1][1] for i in range(8))


def test_added_mean_is_exact_and_percentiles_come_from_the_buckets():
    # without: 50 calls of 200 ns (bucket [128, 256)) and 50 of 300 ns ([256, 512));
    # with: 100 calls of 1000 ns ([512, 1024)) and 1 of 9000 ns ([8192, 16384))
    windows = [
        Window(0, False, 1.0, {GETPPID: hist(*[200] * 50)}),
        Window(0, True, 1.0, {GETPPID: hist(*[1000] * 50)}),
        Window(1, True, 1.0, {GETPPID: hist(*[1000] * 50, 9000)}),
        Window(1, False, 1.0, {GETPPID: hist(*[300] * 50)}),
    ]
    (e,) = compare(windows, {GETPPID: "getppid"})
    assert e.without.count == 100 and e.with_.count == 101
    assert e.added_mean == pytest.approx((100 * 1000 + 9000) / 101 - 250)
    # p50 without: rank 50 ends the first bucket, interpolated to its top (256);
    # p50 with: 1000 (every value of its bucket is 1000: clamped to min/max)
    assert e.added(50) == pytest.approx(1000 - 256)
    # p99 without: rank 99 of 100, in [256, 512) at 49/50 of it, clamped to max 300;
    # p99 with: rank 99.99 of 101, in [512, 1024) at 99.99/100 of it (below max 9000)
    assert e.added(99) == pytest.approx(512 + 512 * 99.99 / 100 - 300)
    # per round: the difference of that round's means
    assert e.round_added_mean == pytest.approx([1000 - 200, (50 * 1000 + 9000) / 51 - 300])


def test_histogram_difference_shares():
    windows = [Window(0, False, 1.0, {GETPPID: hist(*[200] * 3, 300)}),
               Window(0, True, 1.0, {GETPPID: hist(300, 300, 1000, 1000)})]
    (e,) = compare(windows, {GETPPID: "getppid"})
    got = {k: (round(a, 3), round(b, 3)) for k, a, b in e.shares()}
    # slots 8 [128,256), 9 [256,512), 10 [512,1024): each side's shares, empty ones kept
    assert got == {8: (0.75, 0.0), 9: (0.25, 0.5), 10: (0.0, 0.5)}
    diff = e.to_json()["difference"]
    assert [d["slot"] for d in diff] == [8, 9, 10]
    assert sum(d["difference"] for d in diff) == pytest.approx(0)
    assert [d["difference"] for d in diff] == pytest.approx([-0.75, 0.25, 0.5])


@given(st.lists(st.integers(1, 10**7), min_size=1, max_size=40),
       st.lists(st.integers(1, 10**7), min_size=1, max_size=40))
def test_added_mean_is_the_difference_of_the_means(without, with_):
    windows = [Window(0, True, 1.0, {GETPPID: hist(*with_)}),
               Window(0, False, 1.0, {GETPPID: hist(*without)})]
    (e,) = compare(windows, {GETPPID: "getppid"})
    assert e.added_mean == pytest.approx(sum(with_) / len(with_) - sum(without) / len(without))
    shares = e.shares()
    assert sum(a for _k, a, _b in shares) == pytest.approx(1)
    assert sum(b for _k, _a, b in shares) == pytest.approx(1)


def test_one_condition_without_calls_compares_nothing():
    windows = [Window(0, True, 1.0, {GETPPID: hist(500)}), Window(0, False, 1.0, {})]
    (e,) = compare(windows, {GETPPID: "getppid"})
    assert e.added_mean is None and e.added(50) is None and e.round_added_mean == []
    out = text([e], ["head"])
    assert "mean n/a" in out and "nothing to compare" in out
    j = orjson.loads(orjson.dumps(e.to_json()))
    assert j["added_ns"] == {"mean": None, "p50": None, "p99": None}


def test_which_rules_select_a_syscall():
    on_getppid = rule("-a always,exit -F arch=b64 -S getppid -k k")
    assert names(on_getppid, GETPPID, B64)
    assert not names(on_getppid, GETPID, B64)
    assert not names(rule("-a always,exit -F arch=b32 -S getppid"), GETPPID, B64)
    assert names(rule("-a always,exit -F arch=b64 -S all"), GETPID, B64)
    assert names(rule("-w /etc/passwd -p wa"), GETPID, B64)
    assert not names(rule("-a never,task"), GETPID, B64)
    windows = [Window(0, True, 1.0, {GETPPID: hist(900), GETPID: hist(300)}),
               Window(0, False, 1.0, {GETPPID: hist(200), GETPID: hist(250)})]
    ppid, pid = compare(windows, {GETPPID: "getppid", GETPID: "getpid"}, [on_getppid], B64)
    assert (ppid.named_by, pid.named_by) == (1, 0)
    assert "1 of 1 rules apply to getppid" in text([ppid], [])
    assert "no rule names getpid" in text([pid], [])
    assert pid.to_json()["rules_applying"] == 0


def test_text_leaves_out_tail_rows_empty_on_both_sides():
    # one call of 3 ms among 10 000 of 200 ns: 0.01 %, shown as 0.0% on both sides
    windows = [Window(0, False, 1.0, {GETPPID: hist(*[200] * 10_000, 3_000_000)}),
               Window(0, True, 1.0, {GETPPID: hist(*[300] * 10_000)})]
    (e,) = compare(windows, {GETPPID: "getppid"})
    rows = [ln for ln in text([e], []).splitlines() if " .. " in ln]
    assert [ln.split()[0] for ln in rows] == ["128ns", "256ns"]
    assert e.shares()[-1][0] == 22 and len(e.to_json()["difference"]) == 15
