"""The stream's order: eBPF events from several CPUs' buffers leave in the order they happened.

Events of one millisecond arrive out of order when a task moves between CPUs (execve
rebalances it); what decides is the BPF program's monotonic stamp, and serials rise in the
order the log is written.
"""

from __future__ import annotations

from types import SimpleNamespace

from audtrace.compat.record import Event, Record
from audtrace.tracer.session import Options, Session, Subcommand
from audtrace.tracer.sink import Sink


class Collect(Sink):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, ev: Event) -> None:
        self.events.append(ev)


def session() -> Session:
    sub = Subcommand(name="t", program=None, decode=None, to_audit=None)
    return Session(sub, Options())


def ebpf_event(sec: int, msec: int, nr: int) -> Event:
    return Event(sec, msec, 0, [Record("SYSCALL", [("syscall", str(nr))])], "ebpf")


def test_within_a_millisecond_the_bpf_stamp_decides_and_serials_follow():
    s = session()
    base = 1_700_000_000_000_000_000
    # arrival order: CPU 1's buffer (the later calls) before CPU 0's (the earlier ones)
    arrivals = [(base + 600_000, 59), (base + 900_000, 12),
                (base + 100_000, 13), (base + 300_000, 33)]
    s.clock = SimpleNamespace(offset=base - 5_000)
    for t, nr in arrivals:
        s.sub = Subcommand(name="t", program=None,
                           decode=lambda raw, arch, clock, t=t: SimpleNamespace(time_ns=t),
                           to_audit=lambda ev, keys, serial, nr=nr:
                           ebpf_event(1_700_000_000, 0, nr))
        s._on_raw(None, 0)
    # and a kernel audit event of the same millisecond, which arrived last
    s._queue(Event(1_700_000_000, 0, 77, [Record("SYSCALL", [("syscall", "0")])], "audit"))
    sink = Collect()
    s._drain(sink, everything=True)
    order = [(e.source, e.records[0].fields[0][1]) for e in sink.events]
    assert order[1:] == [("ebpf", "13"), ("ebpf", "33"), ("ebpf", "59"), ("ebpf", "12")]
    serials = [e.serial for e in sink.events if e.source == "ebpf"]
    assert serials == sorted(serials) and len(set(serials)) == 4
    assert sink.events[0].serial == 77          # kernel serials are the kernel's


def test_later_millisecond_leaves_later_whatever_the_arrival():
    s = session()
    s._queue(ebpf_event(100, 5, 2), 5_000_000)
    s._queue(ebpf_event(100, 4, 1), 9_000_000)  # an earlier millisecond, a later stamp
    sink = Collect()
    s._drain(sink, everything=True)
    assert [e.records[0].fields[0][1] for e in sink.events] == ["1", "2"]
    assert sink.events[0].serial < sink.events[1].serial
