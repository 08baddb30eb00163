"""A reload without a gap: a slot's new program is attached before its old one goes, and
each syscall they both saw is written once.

While both programs are attached, a syscall of the slot's request is seen by both: each
program stamps it at the same hook (sys_enter, signal_generate), microseconds apart, and
sends it with the same head (thread, kind, syscall, arguments, result). The old program's
events are all written (its configuration was in force while it ran); an event of the new
program is dropped when the old one sent the same head within `TOLERANCE_NS`, each old
event answering for one new event at most. Two different syscalls of one thread with the
same head within 10 ms, one seen only by the old program and the other only by the new,
would need the new program attached and the old one detached within those 10 ms: the old
one stays attached a second longer (tracer/daemon/reload.py).

The new program's events are held one turn of the loop before they are screened: the old
program's twin of an event may be sent just after the new one was read, and it is read by
the next turn at the latest (every turn reads every program).

A syscall that entered before the new program was attached and ended after the old one was
detached is seen whole by neither (a blocking accept or read across the reload): `stranded`
counts them from the two programs' in-flight tables, as lost events.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from audtrace.compat import tables

TOLERANCE_NS = 10_000_000

Head = Callable[[bytes], tuple[int, tuple]]     # event bytes -> (stamp, what it says)


def head_reader(decoder) -> Head:
    """(stamp, head) of an event through its program's decoder (ebpf.events.Decoder)."""
    unpack = decoder.head.unpack_from

    def head(buf: bytes) -> tuple[int, tuple]:
        h = unpack(buf)
        return h.ktime, (h.tid, h.kind, h.nr, h.ret, h.args_0, h.args_1, h.args_2, h.args_3)

    return head


class Handoff:
    """One slot's events during a reload: `tap` the old program's batches, `screen` the new
    one's; `finish` gives back what is still held once the old program is gone."""

    def __init__(self, old_head: Head, new_head: Head | None = None,
                 tolerance_ns: int = TOLERANCE_NS) -> None:
        # the new program's reader is set once it is attached (its decoder is made then)
        self.old_head, self.new_head, self.tolerance = old_head, new_head, tolerance_ns
        self.seen: dict[tuple, list[int]] = {}      # head -> stamps not yet answered
        self.held: list[bytes] = []
        self.dropped = 0

    def tap(self, batch: list[bytes]) -> None:
        seen, head = self.seen, self.old_head
        for buf in batch:
            stamp, what = head(buf)
            seen.setdefault(what, []).append(stamp)

    def screen(self, batch: list[bytes]) -> list[bytes]:
        out, self.held = self._unseen(self.held), list(batch)
        return out

    def finish(self) -> list[bytes]:
        out, self.held = self._unseen(self.held), []
        self.seen.clear()
        return out

    def _unseen(self, batch: list[bytes]) -> list[bytes]:
        keep = []
        for buf in batch:
            stamp, what = self.new_head(buf)
            stamps = self.seen.get(what)
            if stamps:
                nearest = min(range(len(stamps)), key=lambda i: abs(stamps[i] - stamp))
                if abs(stamps[nearest] - stamp) <= self.tolerance:
                    stamps.pop(nearest)
                    self.dropped += 1
                    continue
            keep.append(buf)
        return keep


def in_flight(program) -> dict[int, tuple[int, int]]:
    """thread -> (entry stamp, syscall) of the syscalls a program saw enter and not leave."""
    out = {}
    for key, ev in program.bpf["inflight"].items():
        out[int(key.value)] = (int(ev.ktime), int(ev.nr))
    return out


def stranded(old: dict[int, tuple[int, int]], new: dict[int, tuple[int, int]],
             attached_ns: int, alive: Callable[[int], bool] | None = None,
             tolerance_ns: int = TOLERANCE_NS) -> int:
    """Syscalls the old program (detached now) saw enter, that began before the new program
    was attached (`attached_ns`) and that the new program is not holding: seen whole by
    neither. Threads gone since, and exit calls (they never return; a family that reports
    them does so at the task's exit), are not counted."""
    alive = alive or (lambda tid: os.path.exists(f"/proc/{tid}"))
    host = tables.host_arch()
    no_return = {tables.syscall_number(host, n) for n in ("exit", "exit_group")}
    count = 0
    for tid, (stamp, nr) in old.items():
        if stamp >= attached_ns or nr in no_return or not alive(tid):
            continue
        twin = new.get(tid)
        if twin is not None and abs(twin[0] - stamp) <= tolerance_ns:
            continue
        count += 1
    return count
