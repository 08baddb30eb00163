"""`audtrace latency`: how long syscalls or a kernel function take, aggregated in the kernel.

bpf/latency.c keeps log2 histograms with exact count/sum/min/max in BPF maps; the session's
tick drains them and reports (tracer/latency/report.py). Calls slower than --slower-than
become SYSCALL events of the same stream as the other subcommands, with their latency as an
extra field.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import click
from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.tracer import declare, options
from audtrace.tracer.ebpf import features
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.latency.histogram import parse_duration
from audtrace.tracer.latency.report import Reporter
from audtrace.tracer.records import enc_own_int, event_of, proctitle_record, syscall_record
from audtrace.tracer.session import Subcommand

EXIT_NAMES = ("exit", "exit_group")  # never return: measured to the task's last switch
LATENCY_FIELD = "latency_ns"


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
    report_to: TextIO = sys.stdout


def program(req: LatencyRequest) -> ProgramSpec:
    arch = tables.host_arch()
    # -2 matches no syscall: that one is not traced
    exit_nrs = {n: tables.syscall_number(arch, n) for n in EXIT_NAMES if n in req.syscalls}
    exit_nr = {n: -2 if exit_nrs.get(n) is None else exit_nrs[n] for n in EXIT_NAMES}
    defines: dict[str, int | str] = {
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
    return declare.program("latency.c", req.syscalls, defines, pids=req.pids, comms=req.comms,
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
    latency = enc_own_int(ev.detail or 0)
    rec = syscall_record(ev, keys, result=result, after=((LATENCY_FIELD, latency),))
    return event_of(ev, [rec, proctitle_record(ev.who)], serial)


# ---- declaration and command line ----------------------------------------------------

def subcommand(req: LatencyRequest, keys: list[str]) -> Subcommand:
    how = (f"{req.function_via} on {req.function}" if req.function
           else "eBPF syscall tracepoints, log2 histograms in BPF maps")
    return Subcommand(name="latency", program=program(req), decode=decode, to_audit=to_audit,
                      tick=Reporter(req, req.report_to), mechanism=how)


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


@declare.command(subcommand)
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
def command(common, syscalls, function, function_via, pids, comms, per_process, interval,
            slower_than, heatmap, heatmap_step) -> LatencyRequest:
    """How long syscalls or a kernel function take: log2 histograms kept in the kernel."""
    if bool(syscalls) == bool(function):
        raise click.UsageError("give either --syscall LIST or --function NAME")
    if common["source"] != "ebpf":
        raise click.BadParameter("kernel audit measures no durations: only ebpf",
                                 param_hint="--source")
    if slower_than and function:
        raise click.BadParameter("applies to --syscall only (a function call is no audit"
                                 " event)", param_hint="--slower-than")
    # slow-call events own stdout when they have no -o: the report moves to stderr then
    events_on_stdout = slower_than and common["output"] in (None, "-")
    req = LatencyRequest(syscalls=syscalls, function=function, pids=list(pids), comms=comms,
                         per_process=per_process, slower_than_ns=slower_than, interval=interval,
                         heatmap=heatmap, heatmap_step=heatmap_step or interval or 1.0,
                         json=common["fmt"] == "json",
                         report_to=sys.stderr if events_on_stdout else sys.stdout)
    if function:
        _choose_function_mechanism(req, function_via)
    return req


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
