"""Normalized events -> audit records, in the kernel's own record shapes and field order.

Field order and encodings follow what the kernel writes (see ../shared/AUDIT-FORMAT.md):
ausearch finds fields by sequential search, so order matters as much as spelling.
Every record audtrace makes ends with `src=ebpf`, and its serial has bit 63 set and the
audtrace pid in bits 32..62, so an eBPF event can share its identity neither with a
kernel audit event nor with another audtrace's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from audtrace.compat.record import Event, Record, enc_hex, enc_int, enc_str
from audtrace.tracer.events import Identity, KernelSignal, SyscallEvent, Target

SRC = ("src", "ebpf")
UNSET = 0xFFFFFFFF


def serials(pid: int | None = None) -> Iterator[int]:
    base = (1 << 63) | ((pid if pid is not None else os.getpid()) & 0x7FFFFFFF) << 32
    n = 0
    while True:
        n = (n + 1) & 0xFFFFFFFF
        yield base | n


def enc_key(keys: list[str]) -> str:
    if not keys:
        return "(null)"
    # several keys travel as one string separated by \x01, which forces the hex form
    return enc_str("\x01".join(keys))


def _signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def identity_fields(who: Identity) -> list[tuple[str, str]]:
    return [
        ("ppid", enc_int(who.ppid)), ("pid", enc_int(who.pid)),
        ("auid", enc_int(who.auid)), ("uid", enc_int(who.uid)), ("gid", enc_int(who.gid)),
        ("euid", enc_int(who.euid)), ("suid", enc_int(who.suid)),
        ("fsuid", enc_int(who.fsuid)), ("egid", enc_int(who.egid)),
        ("sgid", enc_int(who.sgid)), ("fsgid", enc_int(who.fsgid)),
        ("tty", who.tty or "(none)"), ("ses", enc_int(who.ses)),
        ("comm", enc_str(who.comm)), ("exe", enc_str(who.exe) if who.exe else "(null)"),
    ]


def syscall_record(ev: SyscallEvent, keys: list[str], items: int = 0) -> Record:
    fields = [("arch", enc_hex(ev.arch)), ("syscall", enc_int(ev.nr)),
              ("success", "yes" if ev.ret >= 0 else "no"), ("exit", enc_int(ev.ret))]
    fields += [(f"a{i}", enc_hex(a)) for i, a in enumerate(ev.args)]
    fields.append(("items", enc_int(items)))
    fields += identity_fields(ev.who)
    fields += [("key", enc_key(keys)), SRC]
    return Record("SYSCALL", fields)


def obj_pid_record(t: Target) -> Record:
    fields = [("opid", enc_int(t.pid)), ("oauid", enc_int(_signed(t.auid))),
              ("ouid", enc_int(_signed(t.uid))), ("oses", enc_int(_signed(t.ses))),
              ("ocomm", enc_str(t.comm)), SRC]
    if t.from_proc:
        # read from /proc when the event arrived: the kernel generated no signal to see
        fields.insert(-1, ("ofrom", "proc"))
    return Record("OBJ_PID", fields)


def proctitle_record(who: Identity) -> Record:
    return Record("PROCTITLE", [("proctitle", enc_str(who.proctitle or who.comm)), SRC])


def syscall_event(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    records = [syscall_record(ev, keys)]
    records += [obj_pid_record(t) for t in ev.targets]
    records.append(proctitle_record(ev.who))
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    return Event(sec, nsec // 1_000_000, serial, records, "ebpf")


def kernel_signal_event(ev: KernelSignal, keys: list[str], serial: int) -> Event:
    """A signal no syscall sent. There is no SYSCALL to report, so none is invented: the
    record is of audit's anomaly family, SIGNAL-shaped, with the context task as pid= and the
    victim as the object (see README, "Signals the kernel sends")."""
    who, v = ev.context, ev.victim
    fields = [("auid", enc_int(who.auid)), ("uid", enc_int(who.uid)), ("gid", enc_int(who.gid)),
              ("ses", enc_int(who.ses)), ("pid", enc_int(who.pid)), ("comm", enc_str(who.comm)),
              ("exe", enc_str(who.exe) if who.exe else "(null)"),
              ("sig", enc_int(ev.sig)), ("code", enc_int(ev.si_code)),
              ("result", enc_int(ev.result)),
              ("opid", enc_int(v.pid)), ("oauid", enc_int(_signed(v.auid))),
              ("ouid", enc_int(_signed(v.uid))), ("oses", enc_int(_signed(v.ses))),
              ("ocomm", enc_str(v.comm)), ("key", enc_key(keys)), SRC]
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    return Event(sec, nsec // 1_000_000, serial, [Record(KERNEL_SIGNAL_TYPE, fields)], "ebpf")


# decided after measuring ausearch's handling (tests/integration/test_ausearch_format.py)
KERNEL_SIGNAL_TYPE = "ANOM_ABEND"


def target_from_proc(pid: int) -> Target | None:
    """OBJ_PID data of a live process, for sends the kernel refused (no signal generated)."""
    base = Path("/proc") / str(pid)
    try:
        status = (base / "status").read_text()
        comm = (base / "comm").read_bytes().rstrip(b"\n")
        auid = int((base / "loginuid").read_text() or UNSET)
        ses = int((base / "sessionid").read_text() or UNSET)
    except (OSError, ValueError):
        return None
    uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
    tgid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Tgid:"))
    return Target(pid=tgid, auid=auid, uid=uid, ses=ses, comm=comm, from_proc=True)
