"""Normalized events: what a BPF program reported, decoded from the bytes it sent.

An event arrives as the bytes of `struct syscall_event` (bpf/syscall_event.h) at its used
length: the fixed head, then the command line, the family's extra and the executable's
path. The layouts are read from the C source (tracer/ebpf/cstruct.py). What repeats from one
event to the next (the caller's identity, a signal's target) is decoded once and shared:
the same bytes give the same object, and the records rendered from it are kept with it.

Nothing here knows the audit text format; tracer/records.py turns these into records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from audtrace.tracer.ebpf.cstruct import Codec, Source


@dataclass(slots=True, eq=False)
class Identity:
    """The acting task as audit's SYSCALL record describes it. Shared by every event of
    the same task, credentials and command line; never changed once made."""
    pid: int
    ppid: int
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
    # renderings kept by tracer/records.py (the SYSCALL fields, PROCTITLE)
    memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)


@dataclass(slots=True, eq=False)
class Target:
    """A signal's target as audit's OBJ_PID record describes it. Shared, never changed."""
    pid: int
    auid: int
    uid: int
    ses: int
    comm: bytes
    memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)


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
    mono_ns: int = 0          # the program's monotonic stamp: orders events exactly


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
    mono_ns: int = 0


@dataclass(slots=True)
class FileInfo:
    """A file as audit's PATH record describes it (bpf/file.h struct file_info)."""
    path: bytes | None        # absolute path walked in the kernel, None when unknown
    ino: int
    dev: int                  # kernel dev_t: major << 20 | minor
    rdev: int
    mode: int
    uid: int
    gid: int
    truncated: bool = False   # deeper than the kernel side walks: leading components missing


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def join_path(buf: bytes) -> bytes | None:
    """A walked path (components leaf first, each NUL-terminated) as /a/b/c; None if empty."""
    if not buf:
        return None
    parts = buf.split(b"\0")
    parts.pop()               # after the last NUL
    parts.reverse()
    return b"/" + b"/".join(parts)


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


class Cache(dict):
    """A dict of decoded objects by the bytes they came from, emptied when it grows past
    `limit` (a storm of distinct senders must not grow it without end)."""

    def __init__(self, limit: int = 8192) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class Decoder:
    """Reads the events of one program: its layouts come from the program's C source."""

    def __init__(self, src: Source, arch: int, clock: Clock) -> None:
        self.src, self.arch, self.clock = src, arch, clock
        ev = src.struct("syscall_event")
        self.head = src.codec("syscall_event", end="id")
        first = self.head.names.index("args_0")
        self._args = slice(first, first + 4)
        self.id_at, self.id_end = ev.offset("id"), ev.offset("title")
        self.identity = src.codec("identity")
        self.target = src.codec("target") if src.has_struct("target") else None
        self.identities = Cache()
        self.targets_seen = Cache()
        self._codecs: dict[tuple, Codec] = {}

    def codec(self, name: str, start: str | None = None, end: str | None = None) -> Codec:
        key = (name, start, end)
        c = self._codecs.get(key)
        if c is None:
            c = self._codecs[key] = self.src.codec(name, start, end)
        return c

    def const(self, name: str) -> int:
        return self.src.const(name)

    def split(self, buf: bytes):
        """(head fields, the caller's Identity, the family's extra bytes) of one event."""
        h = self.head.unpack_from(buf)
        at = self.id_end
        title = buf[at:at + h.title_len]
        at += h.title_len
        extra = buf[at:at + h.extra_len]
        at += h.extra_len
        exe = buf[at:at + h.exe_len]
        key = (buf[self.id_at:self.id_end], title, exe)
        who = self.identities.get(key)
        if who is None:
            who = self.identities.put(key, self._identity(key[0], title, exe))
        return h, who, extra

    def _identity(self, raw: bytes, title: bytes, exe: bytes) -> Identity:
        i = self.identity.unpack_from(raw)
        return Identity(
            pid=i.pid, ppid=i.ppid, auid=i.auid, ses=i.ses, uid=i.uid, gid=i.gid,
            euid=i.euid, suid=i.suid, fsuid=i.fsuid, egid=i.egid, sgid=i.sgid, fsgid=i.fsgid,
            comm=_cstr(i.comm), tty=_cstr(i.tty).decode(errors="replace") or None,
            exe=join_path(exe), proctitle=title.rstrip(b"\0"))

    def syscall(self, h, who: Identity) -> SyscallEvent:
        """The part of an event every syscall family shares."""
        return SyscallEvent(time_ns=h.ktime + self.clock.offset, arch=self.arch, nr=h.nr,
                            args=h[self._args], ret=h.ret, who=who, mono_ns=h.ktime)

    def targets(self, raw: bytes) -> list[Target]:
        """`struct target`s one after the other, each decoded once per distinct bytes."""
        size = self.target.size
        out = []
        for at in range(0, len(raw) - size + 1, size):
            key = raw[at:at + size]
            t = self.targets_seen.get(key)
            if t is None:
                v = self.target.unpack_from(key)
                t = self.targets_seen.put(key, Target(pid=v.pid, auid=v.auid, uid=v.uid,
                                                      ses=v.ses, comm=_cstr(v.comm)))
            out.append(t)
        return out

    def file(self, raw: bytes, at: int = 0) -> FileInfo | None:
        """The `struct file_info` at `at` (its path's bytes as its len says)."""
        c = self.codec("file_info", end="path")
        f = c.unpack_from(raw, at)
        if not f.present:
            return None
        path, truncated = self.path(raw, at + self.src.struct("file_info").offset("path"))
        return FileInfo(path=path or b"/", ino=f.ino, dev=f.dev, rdev=f.rdev, mode=f.mode,
                        uid=f.uid, gid=f.gid, truncated=truncated)

    def with_sockaddr(self, extra: bytes):
        """A family extra ending in a sockaddr sent at saddr_len: (its fields, the sockaddr's
        bytes or None)."""
        c = self.codec("family_extra", end="saddr")
        x = c.unpack_from(extra)
        return x, extra[c.size:c.size + x.saddr_len] or None

    def path(self, raw: bytes, at: int) -> tuple[bytes | None, bool]:
        """The `struct exe_path` at `at`: (the path, None when empty; truncated)."""
        c = self.codec("exe_path", end="buf")
        p = c.unpack_from(raw, at)
        start = at + c.size
        return join_path(raw[start:start + p.len]), bool(p.truncated)
