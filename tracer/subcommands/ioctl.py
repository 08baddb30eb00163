"""`audtrace ioctl`: who does which ioctl on which file.

bpf/ioctl.c: SYSCALL (a1 is the request), PATH (the file behind the fd, resolved in the
kernel: path, inode, dev, mode, owner, rdev), PROCTITLE. Kernel audit writes no PATH for an
ioctl (no name is looked up): the eBPF event says more. `--request` and `--pid` filter
in the kernel and in the audit rules alike, `--comm` in the kernel and on the relayed
events; `--path` on the file's inode and device (eBPF only, refused with `--source
audit|both`: audit has no inode to compare for an fd).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import click
from audtrace.compat import ioctls
from audtrace.compat.record import Event
from audtrace.compat.rules import Rule
from audtrace.tracer import declare, options
from audtrace.tracer.audit.match import process_filter
from audtrace.tracer.ebpf.events import Decoder, FileInfo, SyscallEvent
from audtrace.tracer.ebpf.layout import kernel_dev
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import event_of, path_record, proctitle_record, syscall_record
from audtrace.tracer.session import Subcommand


@dataclass
class IoctlRequest:
    requests: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)


def file_key(path: str) -> bytes:
    """struct file_key of bpf/ioctl.c: u64 inode, u32 kernel dev_t, u32 pad."""
    st = os.stat(path)
    return (st.st_ino.to_bytes(8, "little") + kernel_dev(st.st_dev).to_bytes(4, "little")
            + b"\0" * 4)


def program(req: IoctlRequest) -> ProgramSpec:
    return declare.program("ioctl.c", ("ioctl",), pids=req.pids, comms=req.comms,
                           maps={"filter_request": list(req.requests),
                                 "filter_file": [file_key(p) for p in req.paths]})


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    ev.detail = d.file(extra, 0)
    return ev


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    f: FileInfo | None = ev.detail
    records = [syscall_record(ev, keys, items=1 if f else 0)]
    if f is not None:
        records.append(path_record(0, f.path, f))
    records.append(proctitle_record(ev.who))
    return event_of(ev, records, serial)


def audit_rules(req: IoctlRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S ioctl [-F a1=REQ] -k KEY`, one rule per request."""
    return declare.audit_rules(["ioctl"], keys, arch=arch, a1=req.requests, pid=req.pids)


def audit_filter(req: IoctlRequest):
    """--comm (no audit rule field) on the relayed events; --request and --pid are in the
    rules, --path is refused on the audit side."""
    return process_filter(comms=req.comms)


def subcommand(req: IoctlRequest, keys: list[str]) -> Subcommand:
    return Subcommand(name="ioctl", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req, keys), audit_filter=audit_filter(req))


# an ioctl names its file by descriptor: kernel audit writes no PATH for it, so nothing on
# the audit side says which file it was
NO_AUDIT_PATH = ("--path compares the file behind the descriptor, which kernel audit's "
                 "ioctl record does not name: use --source ebpf")


def _requests(_ctx, _param, values) -> list[int]:
    try:
        return [ioctls.parse(t) for t in options.strs(values)]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _paths(_ctx, _param, values) -> list[str]:
    for p in values:
        if not os.path.exists(p):
            raise click.BadParameter(f"{p!r} does not exist")
    return list(values)


@declare.command(subcommand)
@click.option("--request", "requests", multiple=True, callback=_requests, metavar="NAME|NUMBER",
              help="Only this request: RTC_SET_TIME, TCGETS, 0x4024700a (repeatable).")
@click.option("--path", "paths", multiple=True, callback=_paths,
              help="Only ioctls on this file (its inode and device; repeatable).")
@options.pid_option()
@options.comm_option()
def command(common, **request) -> IoctlRequest:
    """ioctl calls: the request decoded and the file behind the descriptor."""
    if request["paths"] and common["source"] != "ebpf":
        raise click.BadParameter(NO_AUDIT_PATH, param_hint="--path")
    return IoctlRequest(**request)
