"""BTF-typed raw tracepoints (tp_btf), which BCC 0.26 compiles but cannot load.

A tp_btf program is a raw tracepoint program typed by the kernel's BTF: its context is the
tracepoint's arguments as u64s, and a pointer among them (sys_enter's `struct pt_regs *`)
may be read with plain loads, which the verifier turns into fault-safe ones, where a raw
tracepoint program needs a helper call per read. BCC compiles the C (its maps are created
then, their fds already in the instructions); this module loads a function's instructions
with bpf(BPF_PROG_LOAD) as BPF_PROG_TYPE_TRACING / BPF_TRACE_RAW_TP against the vmlinux
typedef `btf_trace_<tracepoint>`, and attaches it with BPF_RAW_TRACEPOINT_OPEN. Both fds are
handed to the BCC object, whose cleanup closes them (closing the link detaches).
"""

from __future__ import annotations

import errno
import os
import struct

from audtrace.tracer.ebpf import sysbpf
from audtrace.tracer.ebpf.btf import BTF, VMLINUX, BTFError

_btf: BTF | None = None
# r0 = 0; exit: the smallest program the verifier accepts
_RETURN_0 = struct.pack("<BBhiBBhi", 0xB7, 0, 0, 0, 0x95, 0, 0, 0)


class TpBtfError(OSError):
    pass


def _attach_btf_id(tracepoint: str) -> int:
    global _btf
    if _btf is None:
        _btf = BTF.load()
    return _btf.typedef_id(f"btf_trace_{tracepoint}")


def load(insns: bytes, tracepoint: str, name: str) -> int:
    """The fd of `insns` loaded as a tp_btf program on `tracepoint`; TpBtfError with the
    verifier's last words when refused."""
    try:
        btf_id = _attach_btf_id(tracepoint)
    except (OSError, BTFError) as e:
        raise TpBtfError(errno.ENOENT, f"no BTF for tracepoint {tracepoint}: {e}") from None
    try:
        return sysbpf.prog_load(sysbpf.PROG_TYPE_TRACING, insns, name,
                                sysbpf.TRACE_RAW_TP, btf_id)
    except sysbpf.BPFError as e:
        code = errno.errorcode.get(e.errno, e.errno)
        raise TpBtfError(e.errno, f"tp_btf {tracepoint} refused ({code}): {e.strerror}") from None


def attach(prog_fd: int) -> int:
    """The link fd of a loaded tp_btf program, attached to its tracepoint."""
    try:
        return sysbpf.raw_tracepoint_open(prog_fd)
    except sysbpf.BPFError as e:
        raise TpBtfError(e.errno, f"tp_btf attach: {e.strerror}") from None


def attach_function(bpf, fn_name: str, tracepoint: str) -> None:
    """BCC function `fn_name` of `bpf` (a bcc.BPF) loaded and attached as tp_btf; its fds
    are closed by bpf.cleanup(), as BCC's own."""
    prog = load(bpf.dump_func(fn_name), tracepoint, fn_name)
    try:
        link = attach(prog)
    except TpBtfError:
        os.close(prog)
        raise
    bpf.funcs[fn_name.encode()] = type(bpf).Function(bpf, fn_name.encode(), prog)
    bpf.raw_tracepoint_fds[f"tp_btf:{tracepoint}:{fn_name}".encode()] = link


def detach_all(bpf) -> None:
    """Close what attach_function handed to `bpf` (a refused pair: neither stays)."""
    for key in [k for k in bpf.raw_tracepoint_fds if k.startswith(b"tp_btf:")]:
        name = key.split(b":")[-1]
        os.close(bpf.raw_tracepoint_fds.pop(key))
        fn = bpf.funcs.pop(name, None)
        if fn is not None:
            os.close(fn.fd)


def available() -> tuple[bool, str]:
    """Whether tp_btf programs load here (Linux 5.5 with BTF): an empty one on sys_enter.
    Probed apart from fentry, which some kernels refuse while tp_btf loads."""
    if not VMLINUX.is_file():
        return False, f"needs BTF (no {VMLINUX})"
    try:
        os.close(load(_RETURN_0, "sys_enter", "probe_tp_btf"))
    except TpBtfError as e:
        return False, str(e.strerror or e)
    return True, "a tp_btf program on sys_enter loaded"
