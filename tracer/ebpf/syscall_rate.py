"""How this machine's syscalls split by number, counted for a moment: what share of them a
request traces, the input of the hook choice (tracer/ebpf/hooks.py).

A raw tracepoint on sys_enter adds one to a per-CPU counter of the call's number, except
for audtrace's own calls (its start-up is not the machine's load). The program is eighteen
BPF instructions, assembled here and loaded with bpf(2) directly: BCC would take a second to
compile it, this takes a millisecond, and it counts while BCC compiles the real program.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from audtrace.tracer.ebpf import sysbpf
from audtrace.tracer.ebpf.sysbpf import PSEUDO_MAP_FD, insn

SLOTS = 1024            # syscall numbers counted: every table stays below 512


def program(map_fd: int, self_tgid: int) -> bytes:
    """counts[id] += 1 for the raw tracepoint sys_enter (args[1] is the syscall number),
    unless the caller is self_tgid."""
    return b"".join([
        insn(0xBF, 6, 1),                    # r6 = ctx
        insn(0x85, imm=14),                  # call bpf_get_current_pid_tgid
        insn(0x77, 0, imm=32),               # r0 >>= 32: the tgid
        insn(0x15, 0, off=12, imm=self_tgid),  # if r0 == self goto out
        insn(0x79, 1, 6, off=8),             # r1 = ctx->args[1]: the number
        insn(0x25, 1, off=10, imm=SLOTS - 1),  # if r1 > SLOTS - 1 (unsigned) goto out
        insn(0x63, 10, 1, off=-4),           # *(u32 *)(fp - 4) = r1: the key
        insn(0x18, 1, PSEUDO_MAP_FD, imm=map_fd), insn(0),  # r1 = the map
        insn(0xBF, 2, 10),                   # r2 = fp
        insn(0x07, 2, imm=-4),               # r2 += -4
        insn(0x85, imm=1),                   # call bpf_map_lookup_elem
        insn(0x15, 0, off=3, imm=0),         # if r0 == NULL goto out
        insn(0x79, 1, 0),                    # r1 = *(u64 *)r0
        insn(0x07, 1, imm=1),                # r1 += 1 (per CPU: no other writer)
        insn(0x7B, 0, 1),                    # *(u64 *)r0 = r1
        insn(0xB7, 0, imm=0),                # out: r0 = 0
        insn(0x95),                          # exit
    ])


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """How many values a per-CPU map holds: the kernel's possible CPUs ("0-3,6")."""
    n = 0
    for part in path.read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


class SyscallCounter:
    """Counts every syscall of the machine by number from construction to `close()`."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.ncpu = possible_cpus()
        try:
            self.map_fd = sysbpf.map_create(sysbpf.MAP_TYPE_PERCPU_ARRAY, 4, 8, SLOTS)
            self.fds.append(self.map_fd)
            prog_fd = sysbpf.prog_load(sysbpf.PROG_TYPE_RAW_TRACEPOINT,
                                       program(self.map_fd, os.getpid()), "syscall_rate")
            self.fds.append(prog_fd)
            self.fds.append(sysbpf.raw_tracepoint_open(prog_fd, "sys_enter"))
        except BaseException:
            self.close()
            raise

    def counts(self) -> list[int]:
        """Calls so far, by number, all CPUs together."""
        key = ctypes.c_uint32()
        values = (ctypes.c_uint64 * self.ncpu)()
        out = []
        for nr in range(SLOTS):
            key.value = nr
            sysbpf.map_lookup(self.map_fd, key, values)
            out.append(sum(values))
        return out

    def close(self) -> None:
        """Detaches (closing the link's fd) and frees the program and the map."""
        while self.fds:
            os.close(self.fds.pop())


def share(counts: list[int], traced: Iterable[int] | None) -> tuple[float, int]:
    """(the share of the calls counted that `traced` numbers made, calls counted);
    None traced: every syscall."""
    total = sum(counts)
    if traced is None:
        return 1.0, total
    hits = sum(counts[nr] for nr in set(traced) if 0 <= nr < len(counts))
    return (hits / total if total else 0.0), total
