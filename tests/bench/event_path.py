"""Python CPU per event, user space alone: `audtrace kill`'s events as the program sends them,
through the session's own path (decode, records, stream, format, one write per batch).

    python event_path.py [--events N] [--senders K] [--json OUT]

Events come from K senders seen before (the identity and the target repeat, as in a signal
storm), 1,000 to a batch as a poll would take them; each format writes to /dev/null.
CPU time of this process (time.process_time), so a loaded machine does not inflate it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time

from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.tracer.ebpf import wire
from audtrace.tracer.ebpf.events import Clock, Decoder, Identity
from audtrace.tracer.session import settle_memory
from audtrace.tracer.sink import FORMATS, Sink
from audtrace.tracer.stream import Stream
from audtrace.tracer.subcommands import kill

BATCH = 1000
UNSET = 0xFFFFFFFF


def senders(k: int) -> list[Identity]:
    base = Identity(pid=4000, ppid=1, auid=1000, ses=3, uid=1000, gid=1000, euid=1000,
                    suid=1000, fsuid=1000, egid=1000, sgid=1000, fsgid=1000, comm=b"sender",
                    tty="pts0", exe=b"/usr/bin/python3.11", proctitle=b"python3\0storm.py")
    return [dataclasses.replace(base, pid=4000 + i) for i in range(k)]


def kill_events(n: int, k: int) -> list[bytes]:
    src = wire.family_source("signal.c")
    target = src.codec("target").pack(pid=5000, auid=UNSET, uid=0, ses=UNSET, comm=b"target")
    extra = src.codec("family_extra", end="targets").pack(sig=12, ntargets=1) + target
    nr = tables.syscall_number(tables.host_arch(), "kill")
    out = []
    for i, who in zip(range(n), senders(k) * (n // k + 1), strict=False):
        out.append(wire.event_bytes(src, ktime=10**12 + i * 1000, kind=1, nr=nr, ret=0,
                                    args=(5000, 12, 0, 0), who=who, extra=extra))
    return out


def run(events: list[bytes], fmt: str) -> float:
    """CPU seconds for the whole path over `events`."""
    sub = kill.subcommand(kill.KillRequest(signals=[12]), [])
    src = wire.family_source("signal.c")
    decoder = Decoder(src, tables.host_arch(), Clock())
    stream = Stream(itertools.count(1 << 31), window_ns=0)
    sink = Sink(os.devnull, fmt)
    t0 = time.process_time()
    for at in range(0, len(events), BATCH):
        batch: list[tuple[Event, int]] = []
        for buf in events[at:at + BATCH]:
            ev = sub.decode(decoder, buf)
            batch.append((sub.to_audit(ev, [], 0), ev.mono_ns))
        stream.add_many(batch, 0)
        sink.write_many(stream.ready(everything=True))
    cpu = time.process_time() - t0
    sink.close()
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()
    events = kill_events(a.events, a.senders)
    for fmt in FORMATS:
        run(events[:2000], fmt)         # warm: imports, first renderings
    settle_memory()                     # as the session does once set up
    out = {}
    for fmt in FORMATS:
        out[fmt] = min(run(events, fmt) for _ in range(2)) / len(events) * 1e6
    print(json.dumps({"us_per_event": {k: round(v, 2) for k, v in out.items()},
                      "events": a.events, "senders": a.senders}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    sys.exit(main())
