"""The stream: events of both sources leave in time order, eBPF serials given on the way out.

Events wait `window_ns` after they arrive, so one that arrives later but happened earlier
(a long syscall submitted at its exit, a kernel audit record read at the next poll) still
sorts before. Order: the wall-clock millisecond the record says, then the BPF program's
monotonic stamp (exact within a millisecond, whatever order the buffer gave), then arrival.
eBPF serials are given as events leave, so they rise in the order the log is written, as
the kernel's do; relayed kernel events keep theirs.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator

from audtrace.compat.record import Event

WINDOW_NS = 250_000_000


class Stream:
    def __init__(self, serials: Iterator[int], window_ns: int = WINDOW_NS) -> None:
        self.serials = serials
        self.window_ns = window_ns
        self._heap: list[tuple[int, int, int, int, Event]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, ev: Event, mono: int = 0, arrived: int | None = None) -> None:
        self._seq += 1
        t = ev.sec * 1_000_000_000 + ev.msec * 1_000_000
        heapq.heappush(self._heap, (t, mono, self._seq,
                                    time.monotonic_ns() if arrived is None else arrived, ev))

    def add_many(self, events: list[tuple[Event, int]], arrived: int) -> None:
        """Events of one batch, with their BPF stamps, arrived at one time."""
        heap, push, seq = self._heap, heapq.heappush, self._seq
        for ev, mono in events:
            seq += 1
            push(heap, (ev.sec * 1_000_000_000 + ev.msec * 1_000_000, mono, seq, arrived, ev))
        self._seq = seq

    def ready(self, now: int | None = None, everything: bool = False) -> list[Event]:
        """The events whose wait is over (all of them with `everything`), in order."""
        heap, pop = self._heap, heapq.heappop
        now = time.monotonic_ns() if now is None else now
        limit = now - self.window_ns
        out = []
        while heap and (everything or heap[0][3] <= limit):
            ev = pop(heap)[4]
            if ev.source == "ebpf":
                ev.serial = next(self.serials)
            out.append(ev)
        return out

    def clear(self) -> None:
        self._heap.clear()
