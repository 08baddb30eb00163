"""`audtrace latency`: how long syscalls or a kernel function take, aggregated in the kernel.

bpf/latency.c keeps log2 histograms with exact count/sum/min/max in BPF maps; this module
declares the program, drains the maps at each tick (tracer/histogram.py does the math and the
text, tracer/heatmap.py the SVG), and turns calls slower than --slower-than into SYSCALL
events of the same stream as the other subcommands, with their latency as an extra field.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import click
import orjson
from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.tracer import options
from audtrace.tracer import records as audit_records
from audtrace.tracer.ebpf import features
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.latency import heatmap
from audtrace.tracer.latency.histogram import NOTE, Histogram, format_ns, parse_duration, render
from audtrace.tracer.latency.histogram import summary_line as hist_summary

FUNC_NR = -1                         # bpf/latency.c: the histogram key of a kernel function
EXIT_NAMES = ("exit", "exit_group")  # never return: measured to the task's last switch
LATENCY_FIELD = "latency_ns"
GRACE_S = 0.002                      # a program that read the old epoch has finished by then
TOP_PROCESSES = 10


@dataclass
class LatencyRequest:
    syscalls: list[str] = field(default_factory=list)
    function: str | None = None
    function_via: str | None = None          # "fentry" or "kprobe", decided at run time
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    per_process: bool = False
    slower_than_ns: int | None = None
    interval: float | None = None
    heatmap: str | None = None
    heatmap_step: float | None = None
    json: bool = False


def program(req: LatencyRequest) -> ProgramSpec:
    arch = tables.host_arch()
    # -2 matches no syscall: that one is not traced
    exit_nrs = {n: tables.syscall_number(arch, n) for n in EXIT_NAMES if n in req.syscalls}
    exit_nr = {n: -2 if exit_nrs.get(n) is None else exit_nrs[n] for n in EXIT_NAMES}
    defines: dict[str, int | str] = {
        "FILTER_PID": int(bool(req.pids)), "FILTER_UID": 0, "FILTER_COMM": int(bool(req.comms)),
        "SELF_TGID": os.getpid(), "PER_PROCESS": int(req.per_process),
        "SLOWER_THAN_NS": f"{req.slower_than_ns or 0}ULL",
        "LAT_NR_EXIT": exit_nr["exit"], "LAT_NR_EXIT_GROUP": exit_nr["exit_group"],
        "HIST_ENTRIES": 65536 if req.per_process else 4096,
        "STATS_ENTRIES": 10240 if req.per_process else 512,
    }
    if req.function and req.function_via == "fentry":
        defines["FUNC_FENTRY"], defines["FUNC_NAME"] = 1, req.function
    elif req.function:
        defines["FUNC_KPROBE"] = 1      # the name goes to attach_kprobe, not into the C text
    filters: dict[str, list[int | bytes]] = {"filter_pid": list(req.pids),
                                             "filter_comm": [c.encode() for c in req.comms]}
    return ProgramSpec("latency.c", tuple(req.syscalls), defines,
                       {k: v for k, v in filters.items() if v},
                       extra_attach=_extra_attach(req, bool(exit_nrs)))


def _extra_attach(req: LatencyRequest, exits: bool):
    def attach(bpf, _tracefs: Path) -> None:
        if exits:
            bpf.attach_raw_tracepoint(tp="sched_switch", fn_name="on_sched_switch")
        if req.function and req.function_via == "kprobe":
            bpf.attach_kprobe(event=req.function, fn_name="func_kprobe")
            bpf.attach_kretprobe(event=req.function, fn_name="func_kretprobe")
        # fentry/fexit programs are attached by BCC when it loads them
    return attach


# ---- slow calls as audit events ------------------------------------------------------

def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    ev.detail = d.codec("family_extra").unpack_from(extra).latency_ns
    return ev


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    """The SYSCALL record as the kernel writes it, the latency after key= (an unknown field
    ausearch tolerates there; never last, src=ebpf follows), then PROCTITLE."""
    # exit and exit_group never return: audit writes neither success= nor exit=
    result = "none" if tables.syscall_name(ev.arch, ev.nr) in EXIT_NAMES else "is_err"
    latency = audit_records.enc_own_int(ev.detail or 0)
    rec = audit_records.syscall_record(ev, keys, result=result, after=((LATENCY_FIELD, latency),))
    return audit_records.event_of(ev, [rec, audit_records.proctitle_record(ev.who)], serial)


# ---- reading the maps ----------------------------------------------------------------

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


def read_set(bpf, parity: int) -> dict[tuple[int, int], Histogram]:
    """One set of maps (hist/stats 0 or 1) -> {(nr, tgid): Histogram}, emptied."""
    out: dict[tuple[int, int], Histogram] = {}
    for key, per_cpu in _drain(bpf[f"hist{parity}"]):
        h = out.setdefault((int(key.nr), int(key.tgid)), Histogram())
        h.add_bucket(int(key.slot), sum(int(v) for v in per_cpu))
    for key, per_cpu in _drain(bpf[f"stats{parity}"]):
        h = out.setdefault((int(key.nr), int(key.tgid)), Histogram())
        for s in per_cpu:
            h.add_stats(int(s.count), int(s.sum), int(s.min), int(s.max))
    return out


class Reporter:
    """The subcommand's tick: flips the epoch, drains the other map set, prints reports and
    keeps the heatmap's columns."""

    def __init__(self, req: LatencyRequest, out: TextIO) -> None:
        self.req, self.out = req, out
        self.arch = tables.host_arch()
        step = [s for s in (req.heatmap_step if req.heatmap else None, req.interval) if s]
        self.step = min(step) if step else 1.0
        self.epoch = 0
        self.t0 = self.wall0 = None
        self.next_tick = self.next_print = 0.0
        self.last_tick = self.last_print = 0.0
        self.interval_acc: dict[tuple[int, int], Histogram] = {}
        self.total: dict[tuple[int, int], Histogram] = {}
        self.columns: list[tuple[float, float, dict[int, dict[int, int]]]] = []
        self.comms: dict[int, str] = {}
        self.lost = 0

    def __call__(self, program, final: bool) -> None:
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = self.last_tick = self.last_print = now
            self.wall0 = time.time()
            self.next_tick = now + self.step
            self.next_print = now + (self.req.interval or float("inf"))
        if not final and now < self.next_tick:
            return
        bpf = program.bpf
        self.epoch += 1
        bpf["epoch"][ctypes.c_int(0)] = ctypes.c_uint32(self.epoch)
        time.sleep(GRACE_S)
        got = read_set(bpf, (self.epoch - 1) & 1)
        if final:   # the set just made current holds the last moments
            _merge(got, read_set(bpf, self.epoch & 1))
        if self.req.per_process:
            self._read_comms(bpf)
        self.lost = int(bpf["agg_lost"][ctypes.c_int(0)].value)
        self._column(now, got)
        _merge(self.interval_acc, got)
        _merge(self.total, got)
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
        if nr == FUNC_NR:
            return self.req.function or "function"
        return tables.syscall_name(self.arch, nr) or f"syscall {nr}"

    def _traced(self) -> list[int]:
        if self.req.function:
            return [FUNC_NR]
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
            entry = {"name": self.name(nr), "nr": None if nr == FUNC_NR else nr,
                     "kind": "function" if nr == FUNC_NR else "syscall", **h.to_json()}
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


def _merge(into: dict[tuple[int, int], Histogram], got: dict[tuple[int, int], Histogram]):
    for k, h in got.items():
        into.setdefault(k, Histogram()).merge(h)


# ---- declaration and command line ----------------------------------------------------

def subcommand(req: LatencyRequest, keys: list[str], out: TextIO):
    from audtrace.tracer.session import Subcommand

    how = (f"{req.function_via} on {req.function}" if req.function
           else "eBPF syscall tracepoints, log2 histograms in BPF maps")
    return Subcommand(name="latency", program=program(req), decode=decode, to_audit=to_audit,
                      tick=Reporter(req, out), mechanism=how)


def _syscalls(_ctx, _param, values) -> list[str]:
    arch = tables.host_arch()
    out = []
    for tok in options.strs(values):
        name = tables.syscall_name(arch, int(tok)) if tok.isdigit() else tok
        if name is None or tables.syscall_number(arch, name) is None:
            raise click.BadParameter(f"unknown syscall {tok!r} on this architecture")
        if name not in out:
            out.append(name)
    return out


def _function(_ctx, _param, value: str | None) -> str | None:
    # it becomes part of the C text (fentry): a symbol name and nothing else
    if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", value):
        raise click.BadParameter(f"{value!r} is not a kernel symbol name")
    return value


def _duration(_ctx, _param, value) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command()
@click.option("--syscall", "syscalls", multiple=True, callback=_syscalls, metavar="LIST",
              help="Syscalls to time, by name or number (bind,ioctl / 49).")
@click.option("--function", metavar="NAME", callback=_function,
              help="A kernel function to time instead (fentry/fexit or kprobe/kretprobe).")
@click.option("--function-via", type=click.Choice(("auto", "fentry", "kprobe")), default="auto",
              show_default=True, help="Mechanism for --function.")
@options.pid_option()
@options.comm_option("Only processes with this comm.")
@click.option("--per-process", is_flag=True, help="Also break each histogram down by process.")
@click.option("--interval", type=float, callback=options.positive, metavar="SECONDS",
              help="Print the histograms of each interval (default: only at exit).")
@click.option("--slower-than", "slower_than", callback=_duration, metavar="DURATION",
              help="Also write every call slower than this (10ms, 500us) as an audit event.")
@click.option("--heatmap", type=click.Path(dir_okay=False), metavar="FILE.svg",
              help="Write a latency heatmap (time x, log2 buckets y) at exit.")
@click.option("--heatmap-step", type=float, callback=options.positive, metavar="SECONDS",
              help="Seconds per heatmap column (default: --interval, or 1).")
@options.common_options
def command(syscalls, function, function_via, pids, comms, per_process, interval, slower_than,
            heatmap, heatmap_step, **common) -> None:
    """How long syscalls or a kernel function take: log2 histograms kept in the kernel."""
    if bool(syscalls) == bool(function):
        raise click.UsageError("give either --syscall LIST or --function NAME")
    if common["source"] != "ebpf":
        raise click.BadParameter("kernel audit measures no durations: only ebpf",
                                 param_hint="--source")
    if slower_than and function:
        raise click.BadParameter("applies to --syscall only (a function call is no audit"
                                 " event)", param_hint="--slower-than")
    req = LatencyRequest(syscalls=syscalls, function=function, pids=list(pids), comms=comms,
                         per_process=per_process, slower_than_ns=slower_than, interval=interval,
                         heatmap=heatmap, heatmap_step=heatmap_step or interval or 1.0,
                         json=common["fmt"] == "json")
    if function:
        _choose_function_mechanism(req, function_via)
    # slow-call events own stdout when they have no -o: the report moves to stderr then
    events_on_stdout = slower_than and common["output"] in (None, "-")
    out = sys.stderr if events_on_stdout else sys.stdout
    options.run(subcommand(req, list(common["keys"]), out), common)


def _choose_function_mechanism(req: LatencyRequest, via: str) -> None:
    from audtrace.tracer.session import missing_caps

    if missing_caps("ebpf"):
        return  # the session says what is missing
    if "." in req.function and via == "auto":
        via = "kprobe"      # a compiler-made local symbol (foo.isra.0) has no BTF: no fentry
    mech, why = features.function_mechanism(via)
    if mech is None:
        raise click.ClickException(f"latency --function needs fentry/fexit or kprobes, and this"
                                   f" kernel offers neither: {why}")
    if not features.kernel_function_exists(req.function):
        raise click.ClickException(f"no kernel function {req.function!r} in /proc/kallsyms")
    req.function_via = mech
