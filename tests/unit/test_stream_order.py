"""The stream's order: events leave in the order they happened, whatever order they came in.

Events of one millisecond arrive out of order when a syscall is submitted at its exit
(a long call after a short one) or when the sources are read in turns; what decides is
the BPF program's monotonic stamp, and eBPF serials rise in the order the log is written.
"""

from __future__ import annotations

import itertools

from audtrace.compat.record import Event, Record
from audtrace.tracer.stream import Stream


def ebpf_event(sec: int, msec: int, nr: int) -> Event:
    return Event(sec, msec, 0, [Record("SYSCALL", [("syscall", str(nr))])], "ebpf")


def nrs(events: list[Event]) -> list[str]:
    return [e.records[0].fields[0][1] for e in events]


def test_within_a_millisecond_the_bpf_stamp_decides_and_serials_follow():
    s = Stream(itertools.count(1000))
    base = 1_700_000_000_000_000_000
    # arrival order: the later calls before the earlier ones
    arrivals = [(base + 600_000, 59), (base + 900_000, 12),
                (base + 100_000, 13), (base + 300_000, 33)]
    s.add_many([(ebpf_event(1_700_000_000, 0, nr), t) for t, nr in arrivals], arrived=0)
    # and a kernel audit event of the same millisecond, which arrived last
    s.add(Event(1_700_000_000, 0, 77, [Record("SYSCALL", [("syscall", "0")])], "audit"),
          arrived=1)
    out = s.ready(everything=True)
    assert nrs(out[1:]) == ["13", "33", "59", "12"]
    assert [e.serial for e in out] == [77, 1000, 1001, 1002, 1003]   # kernel serials kept


def test_later_millisecond_leaves_later_whatever_the_arrival():
    s = Stream(itertools.count(1))
    s.add(ebpf_event(100, 5, 2), 5_000_000)
    s.add(ebpf_event(100, 4, 1), 9_000_000)  # an earlier millisecond, a later stamp
    out = s.ready(everything=True)
    assert nrs(out) == ["1", "2"] and out[0].serial < out[1].serial


def test_events_wait_the_window_after_they_arrive():
    s = Stream(itertools.count(1), window_ns=100)
    s.add(ebpf_event(100, 5, 2), arrived=1_000)
    assert s.ready(now=1_050) == []
    # one that happened earlier but arrived later still sorts first, once both have waited
    s.add(ebpf_event(100, 4, 1), arrived=1_060)
    assert s.ready(now=1_100) == []          # the earlier one heads the queue and must wait
    assert nrs(s.ready(now=1_160)) == ["1", "2"]
    assert len(s) == 0
