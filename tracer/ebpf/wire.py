"""Events as a BPF program sends them, made in user space: for tests and benchmarks that
drive the decoders without a kernel. The layouts are the C source's (tracer/ebpf/cstruct.py),
so what is built here is what bpf/syscall_event.h's submit_parts() lays out."""

from __future__ import annotations

from audtrace.tracer.ebpf import probes
from audtrace.tracer.ebpf.cstruct import Source
from audtrace.tracer.ebpf.events import Identity


def family_source(name: str) -> Source:
    """The structs and constants of bpf/NAME (its includes expanded)."""
    return Source(probes.expand_includes(name), {"MAX_CPUS": 1, "RINGBUF_PAGES": 1})


def path_bytes(path: bytes | None) -> bytes:
    """A path as capture_path() walks it: components leaf first, each NUL-terminated."""
    if not path:
        return b""
    parts = [p for p in path.split(b"/") if p]
    return b"".join(p + b"\0" for p in reversed(parts))


def identity_bytes(src: Source, who: Identity) -> bytes:
    return src.codec("identity").pack(
        pid=who.pid, ppid=who.ppid, auid=who.auid, ses=who.ses, uid=who.uid, gid=who.gid,
        euid=who.euid, suid=who.suid, fsuid=who.fsuid, egid=who.egid, sgid=who.sgid,
        fsgid=who.fsgid, comm=who.comm, tty=(who.tty or "").encode())


def event_bytes(src: Source, *, ktime: int, kind: int, nr: int, ret: int,
                args: tuple[int, int, int, int], who: Identity, extra: bytes,
                tid: int = 0) -> bytes:
    """One event on the wire: head, identity, then title, extra and exe at their lengths."""
    title = who.proctitle
    exe = path_bytes(who.exe)
    head = src.codec("syscall_event", end="id").pack(
        ktime=ktime, kind=kind, nr=nr, ret=ret, args_0=args[0], args_1=args[1],
        args_2=args[2], args_3=args[3], tid=tid, title_len=len(title), extra_len=len(extra),
        exe_len=len(exe))
    return head + identity_bytes(src, who) + title + extra + exe
