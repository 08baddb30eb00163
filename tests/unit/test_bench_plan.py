"""The benchmark's own logic (tests/bench/plan.py, bench.count_records): interleaving,
ratios against the same round's baseline, the no-loss rate, the log counting."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from audtrace.compat.jsonfmt import format_json
from audtrace.compat.record import format_raw
from audtrace.compat.tables import AUDIT_ARCH_X86_64
from audtrace.tracer import records as audit_records
from audtrace.tracer.ebpf.events import Identity, SyscallEvent, Target
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench  # noqa: E402
import plan  # noqa: E402


def _pairs(rows: list[list[str]]) -> Counter:
    return Counter((a, b) for row in rows for a, b in zip(row, row[1:], strict=False))


@given(st.integers(min_value=1, max_value=9))
def test_schedule_is_balanced(n: int) -> None:
    conds = [f"c{i}" for i in range(n)]
    rounds = n if n % 2 == 0 else 2 * n
    rows = plan.schedule(conds, rounds)
    assert len(rows) == rounds
    for row in rows:  # every condition once per round
        assert sorted(row) == sorted(conds)
    for pos in range(n):  # every position equally often
        counts = Counter(row[pos] for row in rows)
        assert set(counts.values()) == {rounds // n}
    pairs = _pairs(rows)  # every ordered pair equally often
    if n > 1:
        assert len(pairs) == n * (n - 1)
        assert len(set(pairs.values())) == 1


def test_schedule_small_cases() -> None:
    assert plan.schedule(["a", "b"], 2) == [["a", "b"], ["b", "a"]]
    assert plan.schedule(["a", "b", "c", "d"], 1) == [["a", "b", "d", "c"]]
    assert plan.schedule([], 3) == []
    assert plan.schedule(["a"], 0) == []
    # more rounds than the square has rows: it starts over
    assert plan.schedule(["a", "b"], 3)[2] == ["a", "b"]


def test_ratios_compare_within_a_round() -> None:
    rounds = [
        {"none": 100.0, "x": 150.0},
        {"none": 200.0, "x": 260.0},
        {"x": 999.0},
    ]  # no baseline: no ratio
    r = plan.ratios(rounds, "none")
    assert r["x"] == pytest.approx([1.5, 1.3])
    assert r["none"] == [1.0, 1.0]
    assert plan.added(rounds, "none")["x"] == pytest.approx([50.0, 60.0])
    s = plan.summarize(r["x"])
    assert (s.median, s.low, s.high, s.n) == pytest.approx((1.4, 1.3, 1.5, 2))
    with pytest.raises(ValueError):
        plan.summarize([])


def test_overhead_share() -> None:
    rounds = [
        {"none": 100.0, "ours": 110.0, "theirs": 140.0},  # 10 of 40
        {"none": 100.0, "ours": 130.0, "theirs": 90.0},  # theirs adds nothing: skipped
        {"none": 50.0, "ours": 80.0, "theirs": 70.0},  # 30 of 20
        {"none": 50.0, "ours": 60.0},
    ]  # incomplete: skipped
    assert plan.overhead_share(rounds, "none", "ours", "theirs") == pytest.approx([0.25, 1.5])


def step(rate: float, sent: int, recorded: int, lost: int = 0, seconds: float = 1.0):
    return plan.Step(rate=rate, sent=sent, seconds=seconds, recorded=recorded, reported_lost=lost)


def test_no_loss_rate() -> None:
    steps = [
        step(4000, 4000, 3000, 1000),
        step(1000, 1000, 1000),
        step(2000, 2000, 2000),
        step(8000, 8000, 8000),
    ]  # a lucky step after a failure
    best, above = plan.no_loss_rate(steps)
    assert best == 2000
    assert [s.rate for s in above] == [4000, 8000]
    assert above[0].missing == 1000
    # a storm the tracer held back (audit's backlog wait) is not kept up with, lossless or not
    held = step(10000, 6000, 6000)
    assert held.missing == 0 and not held.kept_up()
    assert plan.no_loss_rate([step(1000, 1000, 1000), held])[0] == 1000
    # losses the tool reports count even when the numbers seem to add up
    assert not step(1000, 1000, 1000, lost=1).kept_up()
    assert plan.no_loss_rate([]) == (0.0, [])


def test_table_aligns_columns() -> None:
    text = plan.table(["name", "value"], [["a", 1.234], ["longer", None]])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "value"]
    assert lines[2].split() == ["a", "1.23"]
    assert lines[3].split() == ["longer", "-"]
    assert lines[2].index("1.23") == lines[0].index("value") == lines[3].index("-")


def _event(pid: int, serial: int):
    who = Identity(
        pid=pid,
        ppid=1,
        auid=0,
        ses=1,
        uid=0,
        gid=0,
        euid=0,
        suid=0,
        fsuid=0,
        egid=0,
        sgid=0,
        fsgid=0,
        comm=b"loop",
        tty=None,
        exe=b"/tmp/loop",
        proctitle=b"loop\0storm",
    )
    ev = SyscallEvent(
        time_ns=1_700_000_000_123_000_000,
        arch=AUDIT_ARCH_X86_64,
        nr=62,
        args=(77, 12, 0, 0),
        ret=0,
        who=who,
        targets=[Target(pid=77, auid=0, uid=0, ses=1, comm=b"loop")],
    )
    return audit_records.syscall_event(ev, [], serial)


def _loss_event(n: int):
    """The loss record exactly as a session writes it."""
    ev = audit_records.loss_event("ebpf", n, n, 1_795_000_000_000_000_000)
    ev.serial = 1 << 31
    return ev


@pytest.mark.parametrize("fmt", ["raw", "json"])
def test_count_records_in_audtrace_output(tmp_path: Path, fmt: str) -> None:
    """Counted in what audtrace's own formatters write: per sender pid, plus loss records."""
    lines = []
    for i, pid in enumerate([101, 102, 101, 5101, 1101]):
        ev = _event(pid, i + 1)
        lines.append(format_raw(ev) if fmt == "raw" else format_json(ev).decode())
    loss = _loss_event(7)
    lines.append(format_raw(loss) if fmt == "raw" else format_json(loss).decode())
    path = tmp_path / "log"
    path.write_text("\n".join(lines) + "\n")
    assert bench.count_records(path, {101, 102}, fmt) == (3, 7)
    assert bench.count_records(tmp_path / "absent", {101}, fmt) == (0, 0)
