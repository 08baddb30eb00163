"""`audtrace kill`: who sends which signal to whom.

A declaration, not a script: the syscalls, the in-kernel filters, the audit rules that
express the same request, and how a decoded event becomes audit records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click
from audtrace.compat.record import Event, dec_str
from audtrace.compat.rules import Rule
from audtrace.compat.signals import parse_signals
from audtrace.tracer import declare, options, records
from audtrace.tracer.ebpf.events import Decoder, KernelSignal, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.session import Subcommand

SYSCALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal")
# where the signal number travels, as audit rules must name it
SIGNAL_ARG = {"kill": 1, "tkill": 1, "rt_sigqueueinfo": 1, "pidfd_send_signal": 1,
              "tgkill": 2, "rt_tgsigqueueinfo": 2}


@dataclass
class KillRequest:
    signals: list[int]                      # empty: every signal
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    uids: list[int] = field(default_factory=list)
    target_pids: list[int] = field(default_factory=list)
    target_comms: list[str] = field(default_factory=list)
    kernel_signals: bool = True


def program(req: KillRequest) -> ProgramSpec:
    wanted = set(req.signals) if req.signals else set(range(1, 65))
    mask = sum(1 << s for s in wanted if s < 64)
    return declare.program(
        "signal.c", SYSCALLS, {"SIG_MASK": f"{mask:#x}ULL", "SIG_64_WANTED": int(64 in wanted),
                               "KERNEL_SIGNALS": int(req.kernel_signals)},
        pids=req.pids, uids=req.uids, comms=req.comms,
        maps={"filter_tpid": list(req.target_pids),
              "filter_tcomm": [c.encode() for c in req.target_comms]})


def to_audit(ev: SyscallEvent | KernelSignal, keys: list[str], serial: int) -> Event:
    if isinstance(ev, KernelSignal):
        return records.kernel_signal_events(ev, keys, serial)
    return records.syscall_event(ev, keys, serial)


def decode(d: Decoder, buf: bytes) -> SyscallEvent | KernelSignal:
    h, who, extra = d.split(buf)
    head = d.codec("family_extra", end="targets")
    x = head.unpack_from(extra)
    targets = d.targets(extra[head.size:])
    if h.kind == d.const("EV_KERNEL_SIGNAL"):
        return KernelSignal(time_ns=h.ktime + d.clock.offset, sig=x.sig, si_code=x.si_code,
                            result=x.result, group=bool(x.group), context=who,
                            victim=targets[0], mono_ns=h.ktime)
    ev = d.syscall(h, who)
    ev.targets, ev.targets_dropped = targets, x.ntargets - len(targets)
    return ev


def audit_rules(signals: list[int], keys: list[str], arch: str = "b64") -> list[Rule]:
    """The same request as kernel audit rules: one per (argument, signal), as auditctl would
    write `-a always,exit -F arch=b64 -S kill -S tkill ... -F a1=15 -F key=KEY`.
    No signals: one rule for all six syscalls, every signal. The sender and target filters
    are the relay filter's (`audit_filter`)."""
    if not signals:
        return declare.audit_rules(SYSCALLS, keys, arch=arch)
    by_arg: dict[str, list[str]] = {}
    for name, arg in SIGNAL_ARG.items():
        by_arg.setdefault(f"a{arg}", []).append(name)
    return [rule for arg, names in by_arg.items()
            for rule in declare.audit_rules(names, keys, arch=arch, **{arg: signals})]


def audit_filter(req: KillRequest):
    """The request's filters that audit rules do not carry, applied to relayed events:
    sender pid/uid/comm from SYSCALL, target pid/comm from OBJ_PID, as the eBPF side does."""
    comms = {c.encode() for c in req.comms}
    tcomms = {c.encode() for c in req.target_comms}

    def keep(ev: Event) -> bool:
        sc = ev.records[0]
        if req.pids and int(sc.get("pid") or -1) not in req.pids:
            return False
        if req.uids and int(sc.get("uid") or -1) not in req.uids:
            return False
        if comms and dec_str(sc.get("comm")) not in comms:
            return False
        objs = [r for r in ev.records if r.type == "OBJ_PID"]
        if req.target_pids and not any(int(o.get("opid") or -1) in req.target_pids
                                       for o in objs):
            return False
        return not tcomms or any(dec_str(o.get("ocomm")) in tcomms for o in objs)

    return keep


def subcommand(req: KillRequest, keys: list[str]) -> Subcommand:
    return Subcommand(name="kill", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req.signals, keys), audit_filter=audit_filter(req))


# ---- the command line ----------------------------------------------------------------

def _signals(_ctx, _param, value) -> list[int]:
    if value is None:
        return []
    try:
        return parse_signals(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@declare.command(subcommand)
@click.option("--sig", "signals", callback=_signals, metavar="LIST",
              help="Signals to report: numbers or names (15,12 / TERM,USR2 / SIGTERM)."
              " Default: all.")
@options.pid_option("Only senders with this pid (tgid).")
@options.comm_option("Only senders with this comm.")
@options.uid_option("Only senders with this real uid.")
@options.pid_option("Only signals to this pid.", "--target-pid", "target_pids")
@options.comm_option("Only signals to this comm.", "--target-comm", "target_comms")
@click.option("--kernel-signals/--no-kernel-signals", default=True, show_default=True,
              help="Also report signals the kernel generates itself (faults, SIGPIPE, OOM).")
def command(_common, **request) -> KillRequest:
    """Who sends which signal to whom (kill, tkill, tgkill, sigqueue, pidfd)."""
    return KillRequest(**request)
