"""What the log could not take is counted as the log's loss, and said in the log once it
takes events again; a loss record it could not take is told again, never lost itself."""

from __future__ import annotations

import time

from audtrace.compat.record import Event, Record
from audtrace.tracer import records as audit_records
from audtrace.tracer.session import Options, Session
from audtrace.tracer.sink import Sink


class Log:
    """A sink whose log takes the first `room` events it is given, then `room` is spent."""

    def __init__(self, room: int) -> None:
        self.room, self.stopped, self.got = room, None, []

    def write_many(self, events: list[Event]) -> int:
        n = min(self.room, len(events))
        self.room -= n
        self.got += events[:n]
        return n


def traced(n: int, source: str = "ebpf") -> list[Event]:
    now = time.time_ns() // 1_000_000
    return [Event(now // 1000, now % 1000, 0, [Record("SYSCALL", [("pid", str(i))])], source)
            for i in range(n)]


def losses(events: list[Event], source: str) -> list[int]:
    return [int(ev.records[0].get("lost").strip('"')) for ev in events
            if ev.records[0].type == "DAEMON_ERR"
            and ev.records[0].get("source") == f'"{source}"']


def test_events_the_log_refused_are_its_loss_and_a_refused_loss_record_is_told_again():
    class Program:                                  # lost 3 events in its buffer
        def lost(self) -> int:
            return 3

    s = Session(None, Options())
    s.parts[0].program = Program()
    try:
        # the program's 3, reported in the stream beside 5 traced events
        s.lost_reported["ebpf"] = 3
        for ev in traced(4) + [audit_records.loss_event("ebpf", 3, 3, time.time_ns())] \
                + traced(1, "audit"):
            s._queue(ev)
        full = Log(room=2)
        s._drain(full, everything=True)
        assert len(full.got) == 2
        assert s.lost()["log"] == 3                 # 2 eBPF and 1 audit event refused
        assert s.lost_reported["ebpf"] == 0         # the refused record's 3 are unreported
        assert s.written == {"ebpf": 2, "audit": 0}

        s._report_loss()                            # room again: both told, with totals
        roomy = Log(room=100)
        s._drain(roomy, everything=True)
        assert losses(roomy.got, "log") == [3] and losses(roomy.got, "ebpf") == [3]
        assert s.lost_reported == {"ebpf": 3, "audit": 0, "log": 3}
    finally:
        s.stream.serials.close()


def test_a_sink_says_how_many_it_wrote(tmp_path):
    sink = Sink(str(tmp_path / "x.log"), "interpreted")
    try:
        # interpreted text keeps the traced program's undecodable bytes as they were
        ev = traced(1)[0]
        ev.records[0].fields.append(("comm", '"\udcff"'))
        assert sink.write_many([ev, *traced(2)]) == 3
    finally:
        sink.close()
    assert b" comm=\xff " in (tmp_path / "x.log").read_bytes()
