"""Normalized events: what a BPF program reported, decoded from its C struct into plain data.

Nothing here knows the audit text format; tracer/audit_records.py turns these into records.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field

EXE_DEPTH, EXE_PART = 16, 64   # bpf/identity.h


@dataclass(slots=True)
class Identity:
    """The acting task as audit's SYSCALL record describes it."""
    pid: int
    ppid: int
    tid: int
    auid: int
    ses: int
    uid: int
    gid: int
    euid: int
    suid: int
    fsuid: int
    egid: int
    sgid: int
    fsgid: int
    comm: bytes
    tty: str | None
    exe: bytes | None
    proctitle: bytes


@dataclass(slots=True)
class Target:
    """A signal's target as audit's OBJ_PID record describes it."""
    pid: int
    auid: int
    uid: int
    ses: int
    comm: bytes


@dataclass(slots=True)
class SyscallEvent:
    time_ns: int              # CLOCK_REALTIME at syscall entry
    arch: int                 # AUDIT_ARCH_*
    nr: int
    args: tuple[int, int, int, int]
    ret: int
    who: Identity
    # what the syscall's family adds (signal targets, a sockaddr, ...): set by its decoder
    targets: list[Target] = field(default_factory=list)
    targets_dropped: int = 0  # targets past what the kernel side keeps
    detail: object = None


@dataclass(slots=True)
class KernelSignal:
    """A signal the kernel generated with no signal syscall: fault, SIGPIPE, OOM kill, timer."""
    time_ns: int
    sig: int
    si_code: int
    result: int               # TRACE_SIGNAL_DELIVERED, _IGNORED, _ALREADY_PENDING, ...
    group: bool
    context: Identity         # the task in whose context the kernel generated it
    victim: Target


def _cstr(raw) -> bytes:
    return bytes(raw).split(b"\0", 1)[0]


def _bytes(obj, name: str) -> bytes:
    """A char array member's bytes, NULs included (ctypes would stop at the first NUL)."""
    f = getattr(type(obj), name)
    return ctypes.string_at(ctypes.addressof(obj) + f.offset, f.size)


raw_bytes = _bytes   # public: families decode their own char arrays with it


def _exe(exe) -> bytes | None:
    depth = int(exe.depth)
    if depth == 0:
        return None
    raw = _bytes(exe, "parts")
    parts = [_cstr(raw[i * EXE_PART:(i + 1) * EXE_PART]) for i in range(depth - 1, -1, -1)]
    return b"/" + b"/".join(parts)


def identity_of(c) -> Identity:
    ident, title = c.id, c.title
    tty = _cstr(ident.tty).decode(errors="replace") or None
    return Identity(
        pid=ident.pid, ppid=ident.ppid, tid=ident.tid, auid=ident.auid, ses=ident.ses,
        uid=ident.uid, gid=ident.gid, euid=ident.euid, suid=ident.suid, fsuid=ident.fsuid,
        egid=ident.egid, sgid=ident.sgid, fsgid=ident.fsgid, comm=_cstr(ident.comm), tty=tty,
        exe=_exe(c.exe), proctitle=_bytes(title, "buf")[: int(title.len)].rstrip(b"\0"),
    )


@dataclass(slots=True)
class FileInfo:
    """A file as audit's PATH record describes it (bpf/file_path.h struct file_info)."""
    path: bytes | None        # absolute path walked in the kernel, None when unknown
    ino: int
    dev: int                  # kernel dev_t: major << 20 | minor
    rdev: int
    mode: int
    uid: int
    gid: int
    truncated: bool = False   # deeper than the kernel side walks: leading components missing


def path_of(p) -> bytes:
    """A `struct exe_path` walked from a dentry; no component is the root itself."""
    return _exe(p) or b"/"


def file_of(fi) -> FileInfo | None:
    if not fi.present:
        return None
    return FileInfo(path=path_of(fi.path), ino=int(fi.ino), dev=int(fi.dev), rdev=int(fi.rdev),
                    mode=int(fi.mode), uid=int(fi.uid), gid=int(fi.gid),
                    truncated=bool(fi.path.truncated))


def target_of(t) -> Target:
    return Target(pid=t.pid, auid=t.auid, uid=t.uid, ses=t.ses, comm=_cstr(t.comm))


class Clock:
    """Converts the BPF program's monotonic stamps to wall-clock time.

    Re-sampled on every poll, so a clock change while tracing shifts later events as it
    shifts audit's own stamps.
    """

    def __init__(self) -> None:
        self.mono = time.CLOCK_MONOTONIC
        self.offset = 0
        self.sample()

    def sample(self) -> None:
        # the realtime read bracketed by two monotonic ones; the tightest of three pairs,
        # so a preemption between the reads does not skew every later stamp
        best = None
        for _ in range(3):
            m1 = time.clock_gettime_ns(self.mono)
            r = time.clock_gettime_ns(time.CLOCK_REALTIME)
            m2 = time.clock_gettime_ns(self.mono)
            if best is None or m2 - m1 < best[0]:
                best = (m2 - m1, r - (m1 + m2) // 2)
        self.offset = best[1]

    def realtime(self, mono_ns: int) -> int:
        return mono_ns + self.offset


def decode_syscall(c, arch: int, clock: Clock) -> SyscallEvent:
    """The part of a `struct syscall_event` (bpf/syscall_event.h) every family shares."""
    return SyscallEvent(time_ns=clock.realtime(int(c.ktime)), arch=arch, nr=int(c.nr),
                        args=tuple(int(a) for a in c.args), ret=int(c.ret), who=identity_of(c))
