"""bpf(2) called directly, for the few programs audtrace loads without BCC.

BCC 0.26 cannot load a tp_btf program (tp_btf.py) and would take a second to compile the
syscall counter that runs while it compiles the real program (syscall_rate.py). Both need the
same three commands: load a program, open a raw tracepoint, and (the counter) a map.
`union bpf_attr` is passed zero-filled past the fields used, as the kernel requires.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct

MAP_CREATE, MAP_LOOKUP_ELEM, PROG_LOAD, RAW_TRACEPOINT_OPEN = 0, 1, 5, 17
MAP_TYPE_PERCPU_ARRAY = 6
PROG_TYPE_RAW_TRACEPOINT, PROG_TYPE_TRACING = 17, 26
TRACE_RAW_TP = 23                   # expected_attach_type of a tp_btf program
PSEUDO_MAP_FD = 1                   # src_reg of a ld_imm64 that loads a map's fd
ATTR_SIZE = 128                     # of union bpf_attr, through attach_btf_id
NR_BPF = {"x86_64": 321, "aarch64": 280}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BPFError(OSError):
    pass


def bpf(cmd: int, attr: bytearray) -> int:
    """bpf(cmd, attr): the kernel's non-negative answer (often an fd), or BPFError."""
    nr = NR_BPF.get(platform.machine())
    if nr is None:
        raise BPFError(errno.ENOSYS, f"no bpf() syscall number known for {platform.machine()}")
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), buf, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BPFError(err, os.strerror(err))
    return ret


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One BPF instruction: opcode, registers (src in the high nibble), offset, immediate."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, map_type, key_size, value_size, max_entries)
    return bpf(MAP_CREATE, attr)


def map_lookup(map_fd: int, key: ctypes.Array | ctypes._SimpleCData,
               value: ctypes.Array | ctypes._SimpleCData) -> None:
    """Fills `value` with the element at `key` (ctypes objects, kept alive by the caller)."""
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("<IIQQ", attr, 0, map_fd, 0, ctypes.addressof(key), ctypes.addressof(value))
    bpf(MAP_LOOKUP_ELEM, attr)


def prog_load(prog_type: int, insns: bytes, name: str = "", attach_type: int = 0,
              attach_btf_id: int = 0) -> int:
    """The fd of `insns` loaded as `prog_type`. When refused: BPFError whose strerror is
    the verifier's last line (the load is made again with a log only to say why)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("<IIQQ", attr, 0, prog_type, len(insns) // 8,
                     ctypes.addressof(code), ctypes.addressof(lic))
    struct.pack_into("16s", attr, 48, name.encode()[:15])
    struct.pack_into("<I", attr, 68, attach_type)
    struct.pack_into("<I", attr, 108, attach_btf_id)
    try:
        return bpf(PROG_LOAD, attr)
    except BPFError as refused:
        log = ctypes.create_string_buffer(1 << 16)
        struct.pack_into("<IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
        with contextlib.suppress(BPFError):
            os.close(bpf(PROG_LOAD, attr))
        lines = log.value.decode(errors="replace").strip().splitlines()
        raise BPFError(refused.errno, lines[-1] if lines else refused.strerror) from None


def raw_tracepoint_open(prog_fd: int, tracepoint: str | None = None) -> int:
    """The link fd of a raw tracepoint program attached to `tracepoint`; None for a tp_btf
    program, whose tracepoint came with its load. Closing the fd detaches it."""
    name = ctypes.create_string_buffer(tracepoint.encode()) if tracepoint else None
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name) if name else 0, prog_fd)
    return bpf(RAW_TRACEPOINT_OPEN, attr)
