"""`audtrace latency`: how long syscalls or a kernel function take, aggregated in the kernel.

bpf/latency.c keeps log2 histograms with exact count/sum/min/max in BPF maps; the session's
tick drains them and reports (tracer/latency/report.py). Calls slower than --slower-than
become SYSCALL events of the same stream as the other subcommands, with their latency as an
extra field. `--audit-cost RULE` times the syscalls with and without audit rules in turn
(tracer/latency/audit_cost.py).

How the calls are timed is chosen at run time for its cost per timed call (`mechanism`):
raw tracepoints sys_enter/sys_exit where the kernel has them, start stamps in task-local
storage where programs may use it, counters in per-CPU arrays where the keys are bounded.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import click
from audtrace.compat import rules as audit_rules
from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.tracer import declare, options
from audtrace.tracer.ebpf import features, tp_btf
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.latency import audit_cost
from audtrace.tracer.latency.histogram import parse_duration
from audtrace.tracer.latency.report import Reporter
from audtrace.tracer.records import enc_own_int, event_of, proctitle_record, syscall_record
from audtrace.tracer.session import Subcommand

EXIT_NAMES = ("exit", "exit_group")  # never return: measured to the task's last switch
LATENCY_FIELD = "latency_ns"
FUNC_NR = -1                         # bpf/latency.c's key of a kernel function
# machine -> (layout member, bit): where a task shows it is in a 32-bit syscall, which the
# raw tracepoints see with its own number
_COMPAT = {"x86_64": ("OFF_TI_STATUS", 0x2),        # TS_COMPAT
           "aarch64": ("OFF_TI_FLAGS", 1 << 22)}    # TIF_32BIT
# where the raw tracepoints' programs find the number at sys_exit (the saved registers)
_RAW_MACHINES = ("x86_64", "aarch64")


@dataclass
class Mechanism:
    """How the calls are timed, and why (the tracing line says both)."""
    raw: bool = False            # raw tracepoints sys_enter/sys_exit, else per-syscall ones
    btf: bool = False            # (with raw) as tp_btf programs; raw ones if those are refused
    task_storage: bool = False   # start stamps in task-local storage, else an LRU hash
    arrays: bool = True          # per-CPU arrays by (timed index, bucket), else hashes
    why: str = ""
    function: str | None = None  # "fentry on F" / "kprobe on F" instead of syscall hooks
    # called when the hooks change at attach time (tp_btf refused): the tracing line follows
    changed: Callable[[], None] | None = field(default=None, repr=False)

    def describe(self) -> str:
        if self.function:
            hook = self.function
        else:
            hook = ("tp_btf sys_enter/sys_exit (BTF-typed raw tracepoints)" if self.btf
                    else "raw tracepoints sys_enter/sys_exit" if self.raw
                    else "per-syscall tracepoints")
            hook += f" ({self.why})"
        stamps = "task storage" if self.task_storage else "a per-thread hash"
        counters = "per-CPU arrays" if self.arrays else "per-CPU hashes"
        return f"{hook}, start stamps in {stamps}, log2 histograms in {counters}"


@dataclass
class LatencyRequest:
    syscalls: list[str] = field(default_factory=list)
    function: str | None = None
    function_via: str | None = None          # "fentry" or "kprobe", decided at run time
    function_why: str = ""                   # (auto) why kprobe: fentry passed over
    syscall_via: str = "auto"                # "auto", "raw" or "tracepoints"
    mechanism: Mechanism | None = None       # chosen at run time (choose_mechanism)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    per_process: bool = False
    slower_than_ns: int | None = None
    interval: float | None = None
    heatmap: str | None = None
    heatmap_step: float | None = None
    json: bool = False
    report_to: TextIO = sys.stdout
    audit_cost: audit_cost.Plan | None = None   # --audit-cost: rules, rounds, window, load

    def timed(self) -> list[int]:
        """The keys of what is timed, in the order of the programs' timed indexes."""
        if self.function:
            return [FUNC_NR]
        arch = tables.host_arch()
        return [n for n in (tables.syscall_number(arch, s) for s in self.syscalls)
                if n is not None]


def choose_mechanism(req: LatencyRequest) -> Mechanism:
    """The cheapest way to time this request on this kernel, with the reason.

    Measured per timed call (README "Performance"): raw tracepoints cost less than the
    syscalls' own tracepoints, by the same amount for one syscall or hundreds (the programs
    test the number first, which costs nothing measurable), and a start stamp in task-local
    storage costs far less than one in a hash (update, lookup, delete). The price of raw
    tracepoints is a number test in every other syscall of the machine."""
    arrays = not req.per_process
    if req.function:
        # fentry programs share kprobes' helpers (bpf_tracing_func_proto); libbpf can only
        # probe the latter
        ok, _why = features.task_storage_available("kprobe")
        return Mechanism(task_storage=ok, arrays=arrays,
                         function=f"{req.function_via} on {req.function}"
                         + (f" ({req.function_why})" if req.function_why else ""))
    via = req.syscall_via
    raw_ok, raw_why = features.raw_tracepoint_available()
    machine = tables.arch_name(tables.host_arch()) or ""
    if machine not in _RAW_MACHINES:
        raw_ok, raw_why = False, f"no register layout known for {machine}"
    btf_ok, btf_why = tp_btf.available() if raw_ok else (False, raw_why)
    if via in ("raw", "tp_btf") and not raw_ok:
        raise click.ClickException(f"--syscall-via {via}: {raw_why}")
    if via == "tp_btf" and not btf_ok:
        raise click.ClickException(f"--syscall-via tp_btf: {btf_why}")
    cheapest = ("cheapest per timed call for any number of syscalls; every other syscall"
                " pays a number test")
    if via == "tracepoints":
        raw, btf, why = False, False, "asked for"
    elif via in ("raw", "tp_btf"):
        raw, btf, why = True, via == "tp_btf", "asked for"
    elif raw_ok:
        raw, btf = True, btf_ok
        why = cheapest if btf_ok else f"{cheapest}; no tp_btf: {btf_why}"
    else:
        raw, btf, why = False, False, f"no raw tracepoints: {raw_why}"
    # tp_btf (tracing) programs have the raw tracepoints' helpers (bpf_tracing_func_proto);
    # libbpf can only probe the latter
    ts_ok, _ts_why = features.task_storage_available("raw_tracepoint" if raw else "tracepoint")
    return Mechanism(raw=raw, btf=btf, task_storage=ts_ok, arrays=arrays, why=why)


def _timed_index_c(nrs: list[int]) -> str:
    """timed_index(nr): a timed syscall's index in the counters, -1 for any other."""
    cases = "".join(f"\tcase {nr}:\n\t\treturn {i};\n" for i, nr in enumerate(nrs))
    return ("static __always_inline int timed_index(long nr)\n{\n\tswitch (nr) {\n"
            f"{cases}\t}}\n\treturn -1;\n}}\n")


def program(req: LatencyRequest) -> ProgramSpec:
    if req.mechanism is None:
        req.mechanism = choose_mechanism(req)
    mech = req.mechanism
    arch = tables.host_arch()
    # -2 matches no syscall: that one is not traced
    exit_nrs = {n: tables.syscall_number(arch, n) for n in EXIT_NAMES if n in req.syscalls}
    exit_nr = {n: -2 if exit_nrs.get(n) is None else exit_nrs[n] for n in EXIT_NAMES}
    timed = req.timed()
    defines: dict[str, int | str] = {
        "SELF_TGID": os.getpid(), "PER_PROCESS": int(req.per_process),
        "SLOWER_THAN_NS": f"{req.slower_than_ns or 0}ULL",
        "LAT_NR_EXIT": exit_nr["exit"], "LAT_NR_EXIT_GROUP": exit_nr["exit_group"],
        "LAT_INDEXES": len(timed),
        "HIST_ENTRIES": 65536 if req.per_process else 4096,
        "STATS_ENTRIES": 10240 if req.per_process else 512,
    }
    for name, on in (("LAT_RAW", mech.raw), ("LAT_BTF", mech.btf),
                     ("HAVE_TASK_STORAGE", mech.task_storage),
                     ("LAT_ARRAYS", mech.arrays)):
        if on:
            defines[name] = 1
    if mech.raw:
        machine = tables.arch_name(arch) or ""
        if machine in _COMPAT:
            defines["COMPAT_OFF"], defines["COMPAT_MASK"] = _COMPAT[machine]
    if req.function and req.function_via == "fentry":
        defines["FUNC_FENTRY"], defines["FUNC_NAME"] = 1, req.function
    elif req.function:
        defines["FUNC_KPROBE"] = 1      # the name goes to attach_kprobe, not into the C text
    # --load times its own loop alone: its pid joins the filter once it runs
    pid_filter = {"FILTER_PID": 1} if req.audit_cost and req.audit_cost.load else {}
    return declare.program("latency.c", () if mech.raw else req.syscalls,
                           {**defines, **pid_filter}, pids=req.pids, comms=req.comms,
                           extra_attach=_extra_attach(req, bool(exit_nrs)),
                           generated=_timed_index_c(timed))


def _extra_attach(req: LatencyRequest, exits: bool):
    def attach(bpf, _tracefs: Path) -> None:
        attach_syscall_hooks(bpf, req.mechanism)
        if exits:
            bpf.attach_raw_tracepoint(tp="sched_switch", fn_name="on_sched_switch")
        if req.function and req.function_via == "kprobe":
            bpf.attach_kprobe(event=req.function, fn_name="func_kprobe")
            bpf.attach_kretprobe(event=req.function, fn_name="func_kretprobe")
        # fentry/fexit programs are attached by BCC when it loads them
    return attach


def attach_syscall_hooks(bpf, mech: Mechanism | None) -> None:
    """sys_enter/sys_exit as tp_btf programs, else as raw tracepoints, when they time the
    calls. (The per-syscall tracepoints are attached by the loader from the spec's syscalls.)
    A kernel that refuses the tp_btf programs gets the raw ones, and the tracing line says so."""
    if mech is None or not mech.raw:
        return
    if mech.btf:
        try:
            tp_btf.attach_function(bpf, "lat_btf_enter", "sys_enter")
            tp_btf.attach_function(bpf, "lat_btf_exit", "sys_exit")
            return
        except tp_btf.TpBtfError as e:
            tp_btf.detach_all(bpf)
            mech.btf = False
            mech.why = f"tp_btf refused: {e.strerror}"
            if mech.changed is not None:
                mech.changed()
    bpf.attach_raw_tracepoint(tp="sys_enter", fn_name="lat_raw_enter")
    bpf.attach_raw_tracepoint(tp="sys_exit", fn_name="lat_raw_exit")


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
    spec = program(req)
    run = None if req.audit_cost is None else audit_cost.AuditCost(req, req.audit_cost,
                                                                   req.report_to)

    def how() -> str:
        mech = req.mechanism.describe()
        return mech if run is None else f"{mech}; {run.describe()}"

    if run is None:
        sub = Subcommand(name="latency", program=spec, decode=decode, to_audit=to_audit,
                         tick=Reporter(req, req.report_to), mechanism=how())
    else:
        sub = Subcommand(name="latency", program=spec, decode=decode, to_audit=to_audit,
                         tick=run, finished=run.finished, mechanism=how())

    def changed() -> None:
        sub.mechanism = how()

    req.mechanism.changed = changed
    return sub


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


def _rules(_ctx, _param, values) -> list[audit_rules.Rule]:
    out = []
    for text in values:
        try:
            cmd = audit_rules.parse_args(audit_rules.split_line(text))
        except audit_rules.RuleError as e:
            raise click.BadParameter(f"{text!r}: {e}") from None
        if not isinstance(cmd, audit_rules.RuleCommand) or cmd.op not in ("add", "prepend"):
            raise click.BadParameter(f"{text!r} is no rule to add (-a, -A or -w)")
        out.append(cmd.rule)
    return out


@declare.command(subcommand)
@click.option("--syscall", "syscalls", multiple=True, callback=_syscalls, metavar="LIST",
              help="Syscalls to time, by name or number (bind,ioctl / 49).")
@click.option("--function", metavar="NAME", callback=_function,
              help="A kernel function to time instead (fentry/fexit or kprobe/kretprobe).")
@click.option("--function-via", type=click.Choice(("auto", "fentry", "kprobe")), default="auto",
              show_default=True, help="Mechanism for --function.")
@click.option("--syscall-via", type=click.Choice(("auto", "tp_btf", "raw", "tracepoints")),
              default="auto", show_default=True,
              help="Mechanism for --syscall: sys_enter/sys_exit as BTF-typed (tp_btf) or raw"
              " tracepoints, or each syscall's own tracepoints (auto: the cheapest per"
              " timed call).")
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
@click.option("--audit-cost", "cost_rules", multiple=True, callback=_rules, metavar="RULE",
              help="What these kernel audit rules (auditctl syntax, repeatable) add to each"
              " call: the syscalls timed with and without them, in turns.")
@click.option("--rounds", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="With --audit-cost: rounds of one window with the rules, one without.")
@click.option("--window", type=float, callback=options.positive, default=1.0,
              show_default=True, metavar="SECONDS", help="With --audit-cost: window length.")
@click.option("--load", is_flag=True,
              help="With --audit-cost: audtrace calls the timed syscalls itself, in a loop"
              " of its own, and times that loop alone.")
def command(common, syscalls, function, function_via, syscall_via, pids, comms, per_process,
            interval, slower_than, heatmap, heatmap_step, cost_rules, rounds, window,
            load) -> LatencyRequest:
    """How long syscalls or a kernel function take: log2 histograms kept in the kernel."""
    plan = None
    if cost_rules:
        syscalls = _cost_checks(cost_rules, syscalls, function, pids, comms, per_process,
                                interval, slower_than, heatmap, load)
        plan = audit_cost.Plan(cost_rules, rounds, window, load)
    elif load:
        raise click.BadParameter("applies to --audit-cost only", param_hint="--load")
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
    req = LatencyRequest(syscalls=syscalls, function=function, syscall_via=syscall_via,
                         pids=list(pids), comms=comms, per_process=per_process,
                         slower_than_ns=slower_than, interval=interval, heatmap=heatmap,
                         heatmap_step=heatmap_step or interval or 1.0,
                         json=common["fmt"] == "json",
                         report_to=sys.stderr if events_on_stdout else sys.stdout,
                         audit_cost=plan)
    if function:
        _choose_function_mechanism(req, function_via)
    return req


def _cost_checks(rules, syscalls, function, pids, comms, per_process, interval, slower_than,
                 heatmap, load) -> list[str]:
    """--audit-cost compares whole histograms of syscalls: what does not fit is refused.
    Without --syscall, the rules' own syscalls of this machine's arch are timed."""
    for given, name in ((function, "--function"), (per_process, "--per-process"),
                        (interval, "--interval"), (slower_than, "--slower-than"),
                        (heatmap, "--heatmap")):
        if given:
            raise click.BadParameter("does not go with --audit-cost", param_hint=name)
    if load and (pids or comms):
        raise click.BadParameter("times its own loop: no --pid or --comm with it",
                                 param_hint="--load")
    if syscalls:
        out = syscalls
    else:
        host = tables.host_arch()
        nrs = sorted({nr for r in rules if r.arch in (None, host) for nr in r.syscalls})
        out = [n for n in (tables.syscall_name(host, nr) for nr in nrs) if n]
        if not out:
            raise click.UsageError("--audit-cost: the rules name no syscall of this machine's"
                                   " arch to time; say which with --syscall LIST")
    if load:
        missing = [n for n in out if n not in audit_cost.LOAD_CALLS]
        if missing:
            raise click.BadParameter(
                f"no built-in way to call {', '.join(missing)} harmlessly (it can: "
                f"{', '.join(sorted(audit_cost.LOAD_CALLS))}); run your own load instead",
                param_hint="--load")
    return out


def _choose_function_mechanism(req: LatencyRequest, via: str) -> None:
    from audtrace.tracer.session import missing_caps

    if missing_caps("ebpf"):
        return  # the session says what is missing
    if not features.kernel_function_exists(req.function):
        raise click.ClickException(f"no kernel function {req.function!r} in /proc/kallsyms")
    # fentry needs the function in the kernel's BTF; kprobes reach any function kallsyms has
    mech, why = features.function_mechanism(via, req.function)
    if mech is None:
        raise click.ClickException(f"latency --function {req.function} needs fentry/fexit or"
                                   f" kprobes, and neither is usable here: {why}")
    req.function_via = mech
    req.function_why = why if mech == "kprobe" and via == "auto" else ""
