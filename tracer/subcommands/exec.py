"""`audtrace exec`: who executes what, with argv as audit's EXECVE record.

execve and execveat through bpf/exec.c: SYSCALL, EXECVE (argc, a0.., the kernel's
splitting of long arguments), CWD, PATH (the executable: name as given, inode of the file
now mapped), PROCTITLE. `--privileged` keeps executions that end with uid != euid and
euid 0, the rule `-C uid!=euid -F euid=0` of the classic escalation watch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click
from audtrace.compat.record import Event, enc_str
from audtrace.compat.rules import COMPARES, Rule
from audtrace.tracer import declare, options
from audtrace.tracer.audit.match import process_filter
from audtrace.tracer.ebpf.events import Decoder, FileInfo, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import (
    cwd_record,
    event_of,
    execve_records,
    path_record,
    proctitle_record,
    syscall_record,
)
from audtrace.tracer.session import Subcommand

SYSCALLS = ("execve", "execveat")


@dataclass
class ExecRequest:
    privileged: bool = False
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    uids: list[int] = field(default_factory=list)


@dataclass
class ExecDetail:
    filename: bytes
    cwd: bytes
    file: FileInfo | None
    argv: list[bytes]
    argc: int
    argv_truncated: bool


def program(req: ExecRequest) -> ProgramSpec:
    return declare.program("exec.c", SYSCALLS, {"PRIVILEGED": int(req.privileged)},
                           pids=req.pids, uids=req.uids, comms=req.comms)


def split_argv(raw: bytes, argc: int) -> tuple[list[bytes], bool]:
    """The NUL-separated argument area -> arguments; truncated when fewer than argc survive
    or the last one was cut."""
    complete = raw.endswith(b"\0")
    args = raw.split(b"\0")
    if complete:
        args = args[:-1]
    return args, (not complete) or len(args) < argc


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x = d.codec("exec_extra", end="file").unpack_from(extra)
    layout = d.src.struct("exec_extra")
    at = layout.offset("argv")
    area = extra[at:at + x.argv_len]     # NULs included
    argv, cut = split_argv(area, x.argc) if ev.ret == 0 else ([], False)
    cwd, _ = d.path(extra, layout.offset("cwd"))
    ev.detail = ExecDetail(
        filename=x.filename.split(b"\0", 1)[0], cwd=cwd or b"/",
        file=d.file(extra, layout.offset("file")), argv=argv, argc=x.argc,
        argv_truncated=cut or x.argv_full > x.argv_len)
    return ev


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    d: ExecDetail = ev.detail
    records = [syscall_record(ev, keys, items=1)]
    if ev.ret == 0:
        execve = execve_records(d.argv, d.argc)
        if d.argv_truncated:
            # past what the kernel side keeps: said, never silently shortened
            execve[-1].fields.insert(-1, ("argv_truncated", enc_str("yes")))
        records += execve
    records.append(cwd_record(d.cwd))
    # a failed exec has no file to read the inode from; the name was looked up unless
    # the kernel found nothing there (ENOENT, ENOTDIR), which audit marks UNKNOWN
    missing = ev.ret in (-2, -20)
    records.append(path_record(0, d.filename, d.file, "UNKNOWN" if missing else "NORMAL"))
    records.append(proctitle_record(ev.who))
    return event_of(ev, records, serial)


def audit_rules(req: ExecRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S execve -S execveat [-C uid!=euid -F euid=0] [-F pid=P]
    [-F uid=U] -k KEY`: one rule per pid and uid asked (kernel audit ORs rules)."""
    fields = [("field_compare", "!=", COMPARES[("uid", "euid")]), ("euid", "=", 0)]
    return declare.audit_rules(SYSCALLS, keys, fields if req.privileged else [], arch,
                               pid=req.pids, uid=req.uids)


def subcommand(req: ExecRequest, keys: list[str]) -> Subcommand:
    return Subcommand(name="exec", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req, keys),
                      audit_filter=process_filter(req.pids, req.uids))


# --comm is the caller's, before the exec; audit has no rule field for a comm, and its
# record of a successful exec carries the new program's: the audit side cannot apply it
NO_AUDIT_COMM = ("--comm is the caller's comm before the exec, which kernel audit's record "
                 "does not carry (it has the new program's): use --source ebpf")


@declare.command(subcommand)
@click.option("--privileged", is_flag=True,
              help="Only executions that end with uid != euid and euid 0 (setuid root).")
@options.pid_option("Only this caller (tgid).")
@options.comm_option("Only callers with this comm.")
@options.uid_option("Only callers with this real uid.")
def command(common, **request) -> ExecRequest:
    """Program executions (execve, execveat) with argv, as audit's EXECVE record."""
    if request["comms"] and common["source"] != "ebpf":
        raise click.BadParameter(NO_AUDIT_COMM, param_hint="--comm")
    return ExecRequest(**request)
