"""Slow calls as audit records (tracer/subcommands/latency.py to_audit)."""

from __future__ import annotations

from audtrace.compat.record import format_raw, split_fields
from audtrace.tracer.ebpf.events import Identity, SyscallEvent
from audtrace.tracer.subcommands.latency import to_audit

WHO = Identity(
    pid=10,
    ppid=9,
    auid=1000,
    ses=3,
    uid=1000,
    gid=1000,
    euid=1000,
    suid=1000,
    fsuid=1000,
    egid=1000,
    sgid=1000,
    fsgid=1000,
    comm=b"sleeper",
    tty="pts0",
    exe=b"/usr/bin/sleeper",
    proctitle=b"sleeper\x001",
)
KERNEL_ORDER = [
    "arch",
    "syscall",
    "success",
    "exit",
    "a0",
    "a1",
    "a2",
    "a3",
    "items",
    "ppid",
    "pid",
    "auid",
    "uid",
    "gid",
    "euid",
    "suid",
    "fsuid",
    "egid",
    "sgid",
    "fsgid",
    "tty",
    "ses",
    "comm",
    "exe",
    "key",
]


def event(nr: int, ret: int = 0) -> SyscallEvent:
    return SyscallEvent(
        time_ns=1_795_316_724_406_999_999,
        arch=0xC000003E,
        nr=nr,
        args=(0x7F00, 0, 0, 0),
        ret=ret,
        who=WHO,
        detail=20_108_906,
    )


def test_kernel_fields_then_latency_then_src():
    lines = format_raw(to_audit(event(35), ["slow"], 5)).splitlines()
    assert [ln.split()[0] for ln in lines] == ["type=SYSCALL", "type=PROCTITLE"]
    assert lines[0].startswith("type=SYSCALL msg=audit(1795316724.406:5): ")
    names = [k for k, _ in split_fields(lines[0].split("): ", 1)[1])]
    assert names == [*KERNEL_ORDER, "latency_ns", "src"]  # a number is never last
    fields = dict(split_fields(lines[0].split("): ", 1)[1]))
    assert fields["latency_ns"] == '"20108906"' and fields["key"] == '"slow"'
    assert fields["syscall"] == "35" and fields["exit"] == "0"


def test_exit_group_has_no_success_or_exit():
    body = format_raw(to_audit(event(231), [], 6)).splitlines()[0].split("): ", 1)[1]
    names = [k for k, _ in split_fields(body)]
    assert "success" not in names and "exit" not in names
    assert names[:3] == ["arch", "syscall", "a0"] and names[-2:] == ["latency_ns", "src"]
