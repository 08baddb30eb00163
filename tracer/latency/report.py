"""`audtrace latency`'s report: the histograms bpf/latency.c keeps in BPF maps, drained at
each tick and printed per interval and at exit (text or JSON), and the heatmap's columns.

The program keeps two sets of maps and an epoch that says which one it fills: a tick flips
the epoch, waits out the programs that read the old one, then drains the set no program
writes any more, so a report never races the counters.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from pathlib import Path
from typing import TextIO

import click
import orjson
from audtrace.compat import tables
from audtrace.tracer.latency import heatmap
from audtrace.tracer.latency.histogram import NOTE, Histogram, format_ns, render
from audtrace.tracer.latency.histogram import summary_line as hist_summary

GRACE_S = 0.002                      # a program that read the old epoch has finished by then
TOP_PROCESSES = 10
BUCKETS = 64                         # bpf/latency.c: log2 slots per timed index


def _drain(table) -> list[tuple[object, object]]:
    """Every entry of a BPF hash, removed as read (entry by entry, atomically per entry)."""
    try:
        return list(table.items_lookup_and_delete_batch())
    except Exception:  # kernels before 5.6: no batch ops; BCC raises bare Exception
        out = []
        for k in list(table.keys()):
            with contextlib.suppress(KeyError):
                out.append((k, table[k]))
                del table[k]
        return out


def _take_range(table, first: int, n: int) -> list:
    """The per-CPU values of array entries first .. first+n-1, each set back to zero."""
    try:
        got = dict((int(k.value), v) for k, v in table.items_lookup_batch())
        keys = (table.Key * n)(*range(first, first + n))
        table.items_update_batch(keys, (table.Leaf * n)())
        return [got[i] for i in range(first, first + n)]
    except Exception:  # kernels before 5.6: no batch ops; BCC raises bare Exception
        out = []
        for i in range(first, first + n):
            out.append(table[i])
            table[i] = table.Leaf()
        return out


def read_set(bpf, parity: int) -> dict[tuple[int, int], Histogram]:
    """One set of hashes (hist/stats 0 or 1) -> {(nr, tgid): Histogram}, emptied."""
    out: dict[tuple[int, int], Histogram] = {}
    for key, per_cpu in _drain(bpf[f"hist{parity}"]):
        h = out.setdefault((int(key.nr), int(key.tgid)), Histogram())
        h.add_bucket(int(key.slot), sum(int(v) for v in per_cpu))
    for key, per_cpu in _drain(bpf[f"stats{parity}"]):
        h = out.setdefault((int(key.nr), int(key.tgid)), Histogram())
        for s in per_cpu:
            h.add_stats(int(s.count), int(s.sum), int(s.min), int(s.max))
    return out


def read_arrays(bpf, parity: int, timed: list[int]) -> dict[tuple[int, int], Histogram]:
    """One half of the arrays (timed index i is the key timed[i]) -> {(nr, 0): Histogram},
    emptied. Only what was called is returned, as from the hashes."""
    n = len(timed)
    stats = _take_range(bpf["stats"], parity * n, n)
    hist = _take_range(bpf["hist"], parity * n * BUCKETS, n * BUCKETS)
    out: dict[tuple[int, int], Histogram] = {}
    for i, nr in enumerate(timed):
        h = Histogram()
        for s in stats[i]:
            h.add_stats(int(s.count), int(s.sum), int(s.min), int(s.max))
        for k in range(BUCKETS):
            h.add_bucket(k, sum(int(v) for v in hist[i * BUCKETS + k]))
        if h.count or h.buckets:
            out[(nr, 0)] = h
    return out


class Counters:
    """The program's counters, read without racing them: flip the epoch, wait out the
    programs that read the old one, drain the set no program writes any more."""

    def __init__(self, timed: list[int], arrays: bool) -> None:
        self.timed, self.arrays = timed, arrays
        self.epoch = 0

    def _read(self, bpf, parity: int) -> dict[tuple[int, int], Histogram]:
        return read_arrays(bpf, parity, self.timed) if self.arrays else read_set(bpf, parity)

    def take(self, bpf, final: bool = False) -> dict[tuple[int, int], Histogram]:
        """What was counted since the last take. `final`: also the set made current now,
        which holds the last moments."""
        self.epoch += 1
        bpf["epoch"][ctypes.c_int(0)] = ctypes.c_uint32(self.epoch)
        time.sleep(GRACE_S)
        got = self._read(bpf, (self.epoch - 1) & 1)
        if final:
            merge(got, self._read(bpf, self.epoch & 1))
        return got

    @staticmethod
    def not_counted(bpf) -> tuple[int, int]:
        """(aggregation map full, no room for a start stamp)"""
        lost = bpf["agg_lost"]
        return int(lost[ctypes.c_int(0)].value), int(lost[ctypes.c_int(1)].value)


class Reporter:
    """The subcommand's tick: flips the epoch, drains the other map set, prints reports and
    keeps the heatmap's columns."""

    def __init__(self, req, out: TextIO) -> None:
        self.req, self.out = req, out       # req: subcommands.latency.LatencyRequest
        self.arch = tables.host_arch()
        self.counters = Counters(req.timed(), req.mechanism.arrays)
        step = [s for s in (req.heatmap_step if req.heatmap else None, req.interval) if s]
        self.step = min(step) if step else 1.0
        self.t0 = self.wall0 = None
        self.next_tick = self.next_print = 0.0
        self.last_tick = self.last_print = 0.0
        self.interval_acc: dict[tuple[int, int], Histogram] = {}
        self.total: dict[tuple[int, int], Histogram] = {}
        self.columns: list[tuple[float, float, dict[int, dict[int, int]]]] = []
        self.comms: dict[int, str] = {}
        self.lost = self.no_stamp = 0
        self.func_nr: int | None = None     # the histogram key of a kernel function

    def __call__(self, program, final: bool) -> None:
        now = time.monotonic()
        if self.t0 is None:
            self.func_nr = program.src.const("FUNC_NR")
            self.t0 = self.last_tick = self.last_print = now
            self.wall0 = time.time()
            self.next_tick = now + self.step
            self.next_print = now + (self.req.interval or float("inf"))
        if not final and now < self.next_tick:
            return
        bpf = program.bpf
        got = self.counters.take(bpf, final)
        if self.req.per_process:
            self._read_comms(bpf)
        self.lost, self.no_stamp = self.counters.not_counted(bpf)
        self._column(now, got)
        merge(self.interval_acc, got)
        merge(self.total, got)
        self.last_tick = now
        self.next_tick = now + self.step
        if self.req.interval and now >= self.next_print and not final:
            self._report("interval", self.last_print, now, self.interval_acc)
            self.interval_acc = {}
            self.last_print = now
            self.next_print = now + self.req.interval
        if final:
            self._report("total", self.t0, now, self.total)
            if self.req.heatmap:
                self._write_heatmap()
            if self.lost:
                click.echo(f"audtrace: {self.lost} latencies not counted: aggregation map full"
                           " (fewer --per-process processes, or a shorter --interval)",
                           err=True)
            if self.no_stamp:
                click.echo(f"audtrace: {self.no_stamp} calls not timed: no room for their"
                           " start stamp", err=True)

    def _read_comms(self, bpf) -> None:
        for k, v in bpf["comms"].items():
            self.comms[int(k.value)] = bytes(v.comm).split(b"\0", 1)[0].decode(errors="replace")

    def _column(self, now: float, got: dict[tuple[int, int], Histogram]) -> None:
        counts: dict[int, dict[int, int]] = {}
        for (nr, _tgid), h in got.items():
            per = counts.setdefault(nr, {})
            for k, n in h.buckets.items():
                per[k] = per.get(k, 0) + n
        self.columns.append((self.last_tick - self.t0, now - self.t0, counts))

    def name(self, nr: int) -> str:
        if nr == self.func_nr:
            return self.req.function or "function"
        return tables.syscall_name(self.arch, nr) or f"syscall {nr}"

    def _traced(self) -> list[int]:
        if self.req.function:
            return [self.func_nr]
        return [n for n in (tables.syscall_number(self.arch, s) for s in self.req.syscalls)
                if n is not None]

    def _report(self, kind: str, t_from: float, t_to: float,
                acc: dict[tuple[int, int], Histogram]) -> None:
        start = self.wall0 + (t_from - self.t0)
        end = self.wall0 + (t_to - self.t0)
        blocks = []
        for nr in self._traced():
            merged = Histogram()
            procs = []
            for (knr, tgid), h in acc.items():
                if knr == nr:
                    merged.merge(h)
                    if self.req.per_process:
                        procs.append((tgid, h))
            procs.sort(key=lambda p: (p[1].max_ns, p[1].count), reverse=True)
            blocks.append((nr, merged, procs))
        if self.req.json:
            self._json(kind, start, end, blocks)
        else:
            self._text(kind, start, end, blocks)
        self.out.flush()

    def _json(self, kind, start, end, blocks) -> None:
        obj = {"type": "latency", "report": kind, "start": round(start, 3),
               "end": round(end, 3), "unit": "ns", "note": NOTE, "entries": []}
        for nr, h, procs in blocks:
            entry = {"name": self.name(nr), "nr": None if nr == self.func_nr else nr,
                     "kind": "function" if nr == self.func_nr else "syscall", **h.to_json()}
            if self.req.per_process:
                entry["processes"] = [{"pid": tgid, "comm": self.comms.get(tgid),
                                       **p.to_json()} for tgid, p in procs]
            obj["entries"].append(entry)
        if self.lost:
            obj["not_counted"] = self.lost
        self.out.write(orjson.dumps(obj).decode() + "\n")

    def _text(self, kind, start, end, blocks) -> None:
        span = f"{time.strftime('%H:%M:%S', time.localtime(start))} .. " \
               f"{time.strftime('%H:%M:%S', time.localtime(end))} ({end - start:.2f}s)"
        lines = [f"== latency {kind}, {span}", f"   ({NOTE})"]
        for nr, h, procs in blocks:
            lines.append(f"{self.name(nr)}: {hist_summary(h)}")
            lines += render(h)
            if procs:
                lines.append(f"    {'pid':>8} {'comm':<16} {'calls':>8} {'p50':>8} {'p99':>8}"
                             f" {'max':>8}")
                for tgid, p in procs[:TOP_PROCESSES]:
                    lines.append(f"    {tgid:>8} {self.comms.get(tgid, '?'):<16} {p.count:>8}"
                                 f" {format_ns(p.percentile(50) or 0):>8}"
                                 f" {format_ns(p.percentile(99) or 0):>8}"
                                 f" {format_ns(p.max_ns):>8}")
                if len(procs) > TOP_PROCESSES:
                    lines.append(f"    ... {len(procs) - TOP_PROCESSES} more processes")
        self.out.write("\n".join(lines) + "\n\n")

    def _write_heatmap(self) -> None:
        panels = []
        for nr in self._traced():
            cols = [heatmap.Column(a, b, dict(c.get(nr, {}))) for a, b, c in self.columns]
            panels.append(heatmap.Panel(self.name(nr), cols))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.wall0))
        svg = heatmap.render(panels, f"audtrace latency heatmap, from {stamp}"
                             f" ({self.step:g}s per column)")
        path = Path(self.req.heatmap)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(svg)
        tmp.replace(path)
        click.echo(f"audtrace: heatmap written to {path} ({heatmap.cell_count(panels)} cells)",
                   err=True)


def merge(into: dict[tuple[int, int], Histogram], got: dict[tuple[int, int], Histogram]):
    for k, h in got.items():
        into.setdefault(k, Histogram()).merge(h)
