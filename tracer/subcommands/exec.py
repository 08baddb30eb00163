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
from audtrace.compat.rules import Rule, rule_syscalls
from audtrace.tracer import options
from audtrace.tracer import records as audit_records
from audtrace.tracer.audit.match import each, process_filter
from audtrace.tracer.ebpf.events import Decoder, FileInfo, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec

SYSCALLS = ("execve", "execveat")
ARGV_MAX = 32768 - 1                # bpf/exec.c: bytes of argv kept
AUDIT_COMPARE_UID_TO_EUID = 11      # linux/audit.h, for `-C uid!=euid`


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
    filters: dict[str, list[int | bytes]] = {
        "filter_pid": list(req.pids), "filter_uid": list(req.uids),
        "filter_comm": [c.encode() for c in req.comms],
    }
    defines: dict[str, int | str] = {"PRIVILEGED": int(req.privileged)}
    for name, keys in filters.items():
        defines[name.upper()] = int(bool(keys))
    return ProgramSpec("exec.c", SYSCALLS, defines, {k: v for k, v in filters.items() if v})


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
    records = [audit_records.syscall_record(ev, keys, items=1)]
    if ev.ret == 0:
        execve = audit_records.execve_records(d.argv, d.argc)
        if d.argv_truncated:
            # past what the kernel side keeps: said, never silently shortened
            execve[-1].fields.insert(-1, ("argv_truncated", enc_str("yes")))
        records += execve
    records.append(audit_records.cwd_record(d.cwd))
    # a failed exec has no file to read the inode from; the name was looked up unless
    # the kernel found nothing there (ENOENT, ENOTDIR), which audit marks UNKNOWN
    missing = ev.ret in (-2, -20)
    records.append(audit_records.path_record(0, d.filename, d.file,
                                             "UNKNOWN" if missing else "NORMAL"))
    records.append(audit_records.proctitle_record(ev.who))
    return audit_records.event_of(ev, records, serial)


def audit_rules(req: ExecRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S execve -S execveat [-C uid!=euid -F euid=0] [-F pid=P]
    [-F uid=U] -k KEY`: one rule per pid and uid asked (kernel audit ORs rules)."""
    nrs = rule_syscalls(arch, SYSCALLS)
    base: list[tuple[str, str, int | str]] = [("arch", "=", arch)]
    if req.privileged:
        base += [("field_compare", "!=", AUDIT_COMPARE_UID_TO_EUID), ("euid", "=", 0)]
    tail: list[tuple[str, str, int | str]] = [("key", "=", k) for k in keys]
    return [Rule(syscalls=nrs, fields=f)
            for f in each(base, tail, pid=req.pids, uid=req.uids)]


def subcommand(req: ExecRequest, keys: list[str]):
    from audtrace.tracer.session import Subcommand

    return Subcommand(name="exec", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req, keys),
                      audit_filter=process_filter(req.pids, req.uids))


# --comm is the caller's, before the exec; audit has no rule field for a comm, and its
# record of a successful exec carries the new program's: the audit side cannot apply it
NO_AUDIT_COMM = ("--comm is the caller's comm before the exec, which kernel audit's record "
                 "does not carry (it has the new program's): use --source ebpf")


@click.command()
@click.option("--privileged", is_flag=True,
              help="Only executions that end with uid != euid and euid 0 (setuid root).")
@options.pid_option("Only this caller (tgid).")
@options.comm_option("Only callers with this comm.")
@options.uid_option("Only callers with this real uid.")
@options.common_options
def command(privileged, pids, comms, uids, **common) -> None:
    """Program executions (execve, execveat) with argv, as audit's EXECVE record."""
    if comms and common["source"] != "ebpf":
        raise click.BadParameter(NO_AUDIT_COMM, param_hint="--comm")
    req = ExecRequest(privileged=privileged, pids=pids, comms=comms, uids=uids)
    options.run(subcommand(req, list(common["keys"])), common)
