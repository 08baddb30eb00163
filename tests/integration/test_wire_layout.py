"""User space reads each program's structs as the compiler laid them out.

tracer/ebpf/cstruct.py reads our structs from the C source; here every family is compiled by BCC
(as audtrace compiles it) and the offsets BCC reports for the event in the in-flight map
must be the ones user space decodes with, member by member, nested structs included.
"""

from __future__ import annotations

import contextlib
import ctypes

import pytest
from audtrace.tracer.bind import conflict as bind_conflict
from audtrace.tracer.ebpf import probes, system
from audtrace.tracer.subcommands import bind, clock, exec, exit, ioctl, kill, latency, net

pytestmark = pytest.mark.kernel

SPECS = {
    "signal.c": lambda: kill.program(kill.KillRequest(signals=[12])),
    "bind.c": lambda: bind.program(bind.BindRequest(),
                                   bind_conflict.choose("sock_diag")),
    "net.c": lambda: net.program(net.NetRequest()),
    "exec.c": lambda: exec.program(exec.ExecRequest()),
    "exit.c": lambda: exit.program(exit.ExitRequest()),
    "ioctl.c": lambda: ioctl.program(ioctl.IoctlRequest()),
    "clock.c": lambda: clock.program(),
    "latency.c": lambda: latency.program(latency.LatencyRequest(syscalls=["getppid"])),
}


def ctype_offsets(ct, base: int = 0, prefix: str = "") -> dict[str, int]:
    out = {}
    for name, typ, *_ in ct._fields_:
        if name.startswith("__pad"):        # BCC's name for trailing padding
            continue
        field = getattr(ct, name)
        out[prefix + name] = base + field.offset
        if isinstance(typ, type) and issubclass(typ, ctypes.Structure):
            out.update(ctype_offsets(typ, base + field.offset, f"{prefix}{name}."))
    return out


def struct_offsets(st, base: int = 0, prefix: str = "") -> dict[str, int]:
    out = {}
    for m in st.members:
        out[prefix + m.name] = base + m.offset
        if m.sub is not None and not m.count:
            out.update(struct_offsets(m.sub, base + m.offset, f"{prefix}{m.name}."))
    return out


@pytest.mark.parametrize("family", list(SPECS))
def test_user_space_reads_the_compiled_layout(family):
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(system.tracefs_mounted(lambda _m: None))
        stack.enter_context(system.header_tree_for_bcc(system.find_header_tree()))
        prog = probes.Program(SPECS[family](), probes.load_layout(), root, probes.PAGE * 4)
        stack.callback(prog.close)
        leaf = prog.bpf["inflight"].Leaf
        ours = prog.src.struct("syscall_event")
        assert ctypes.sizeof(leaf) == ours.size
        assert struct_offsets(ours) == ctype_offsets(leaf)
