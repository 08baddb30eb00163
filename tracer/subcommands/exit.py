"""`audtrace exit`: how processes end.

exit and exit_group as the kernel's audit writes them (bpf/exit.c): one SYSCALL record
at task exit, with no success=/exit= fields (the call never returns), then PROCTITLE.
A process killed by a signal made no exit call; it becomes an ANOM_ABEND record, the type
the kernel gives a core dump (`sig=`, `res=1`), with `core=`, the raw `status=` and, when
seen, the sender (`by_pid=`, `by_comm=`). Beside `audtrace kill`, the two meet on the
victim's pid and the signal: the kill event's OBJ_PID `opid=` and `a1=`, this record's
`pid=` and `sig=`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import click
from audtrace.compat.record import Event, Record, dec_str, enc_int, enc_str
from audtrace.compat.rules import Rule
from audtrace.tracer import declare, options
from audtrace.tracer.audit.match import all_of, process_filter
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.layout import kernel_dev
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import (
    SRC,
    enc_key,
    enc_own_int,
    event_of,
    proctitle_record,
    syscall_record,
)
from audtrace.tracer.session import Subcommand

SYSCALLS = ("exit", "exit_group")


@dataclass
class ExitRequest:
    exe: str | None = None
    code: int | None = None
    comms: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


@dataclass
class ExitDetail:
    status: int             # task->exit_code
    killer_pid: int = 0
    killer_comm: bytes = b""

    @property
    def signal(self) -> int:
        return self.status & 0x7F

    @property
    def core(self) -> bool:
        return bool(self.status & 0x80)


def program(req: ExitRequest) -> ProgramSpec:
    defines: dict[str, int | str] = {"FILTER_CODE": int(req.code is not None),
                                     "EXIT_CODE": req.code or 0, "FILTER_EXE": 0,
                                     "EXE_INO": 0, "EXE_DEV": 0}
    if req.exe is not None:
        st = os.stat(req.exe)
        defines.update(FILTER_EXE=1, EXE_INO=f"{st.st_ino}ULL", EXE_DEV=kernel_dev(st.st_dev))
    return declare.program("exit.c", SYSCALLS, defines, pids=req.pids, comms=req.comms,
                           tracepoint_fields={"TP_GROUP_DEAD": ("sched/sched_process_exit",
                                                                "group_dead")})


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x = d.codec("family_extra").unpack_from(extra)
    if h.kind == d.const("EV_TASK_EXIT"):
        ev.nr = -1
    ev.detail = ExitDetail(status=x.exit_code, killer_pid=x.killer_pid,
                           killer_comm=x.killer_comm.split(b"\0", 1)[0])
    return ev


def exit_syscall_record(ev: SyscallEvent, keys: list[str]) -> Record:
    """SYSCALL as audit writes it for a call that never returned."""
    return syscall_record(ev, keys, result="none")


def abend_record(ev: SyscallEvent, keys: list[str]) -> Record:
    """A death by signal, in the field order of the kernel's core-dump ANOM_ABEND."""
    who, d = ev.who, ev.detail
    fields = [("auid", enc_int(who.auid)), ("uid", enc_int(who.uid)), ("gid", enc_int(who.gid)),
              ("ses", enc_int(who.ses)), ("pid", enc_int(who.pid)), ("comm", enc_str(who.comm)),
              ("exe", enc_str(who.exe) if who.exe else "(null)"),
              ("sig", enc_int(d.signal)), ("res", "1"),
              ("core", enc_str("yes" if d.core else "no")),
              ("status", enc_own_int(d.status))]
    if d.killer_pid:
        fields += [("by_pid", enc_own_int(d.killer_pid)), ("by_comm", enc_str(d.killer_comm))]
    fields += [("key", enc_key(keys)), SRC]
    return Record("ANOM_ABEND", fields)


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    if ev.nr == -1:
        return event_of(ev, [abend_record(ev, keys)], serial)
    return event_of(ev, [exit_syscall_record(ev, keys), proctitle_record(ev.who)], serial)


def audit_rules(req: ExitRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S exit -S exit_group [-F a0=N] [-F exe=PATH] [-F pid=P]
    -k KEY`, one rule per pid asked (kernel audit ORs rules). Audit has no rule for deaths
    by signal (its ANOM_ABEND covers core dumps only)."""
    fields: declare.Fields = []
    if req.code is not None:
        fields.append(("a0", "=", req.code))
    if req.exe is not None:
        fields.append(("exe", "=", req.exe))
    return declare.audit_rules(SYSCALLS, keys, fields, arch, pid=req.pids)


def audit_filter(req: ExitRequest):
    """The request on relayed events where rules do not carry it: --comm on every event
    (SYSCALL and ANOM_ABEND both name the task), and on the kernel's ANOM_ABEND, which no
    rule selects, --pid, --exe (the path audit writes, against the resolved --exe) and
    --code (a death by signal made no exit call: left out, as eBPF leaves it out)."""
    exe = os.fsencode(os.path.realpath(req.exe)) if req.exe is not None else None

    def abend(ev: Event) -> bool:
        rec = ev.records[0]
        if rec.type != "ANOM_ABEND":
            return True
        return req.code is None and (exe is None or dec_str(rec.get("exe")) == exe)

    return all_of(process_filter(req.pids, comms=req.comms),
                  abend if req.code is not None or exe is not None else None)


def subcommand(req: ExitRequest, keys: list[str]) -> Subcommand:
    return Subcommand(name="exit", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req, keys), audit_filter=audit_filter(req),
                      relay_types=("ANOM_ABEND",),
                      mechanism="eBPF, sched_process_exit")


def _exe(_ctx, _param, value: str | None) -> str | None:
    if value is not None and not os.path.exists(value):
        raise click.BadParameter(f"{value!r} does not exist")
    return value


@declare.command(subcommand)
@click.option("--exe", callback=_exe, metavar="PATH",
              help="Only processes running this executable (by inode, as audit's -F exe).")
@click.option("--code", type=click.IntRange(-(1 << 31), (1 << 31) - 1), metavar="N",
              help="Only exit/exit_group calls with this code (a0); leaves out signal deaths.")
@options.comm_option("Only processes with this comm.")
@options.pid_option()
def command(_common, **request) -> ExitRequest:
    """How processes end: exit/exit_group with the code, or the signal that killed them."""
    return ExitRequest(**request)


