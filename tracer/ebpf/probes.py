"""Compile a program from bpf/, attach it, and read what it sends.

A subcommand declares a `ProgramSpec` (which C file, which syscall tracepoints, which
constants and filter sets); this module turns the declaration into a running program.
Constants are prepended as #defines, so an unused filter costs nothing in the kernel.
Events come through the BPF ring buffer where the kernel has one (5.8+), else per-CPU perf
buffers; either way the callback only copies the bytes, and the session decodes them in
batches after each poll.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audtrace.compat import tables
from audtrace.tracer.ebpf import hooks
from audtrace.tracer.ebpf.btf import BTF, BTFError
from audtrace.tracer.ebpf.cstruct import Source
from audtrace.tracer.ebpf.features import optional_features
from audtrace.tracer.ebpf.layout import Layout, from_btf, from_headers

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
if not BPF_DIR.is_dir():  # installed: audtrace/tracer and audtrace/bpf side by side
    BPF_DIR = Path(__file__).parents[2] / "bpf"


@dataclass
class ProgramSpec:
    source: str                                   # file name in bpf/
    syscalls: tuple[str, ...]                     # sys_enter_/sys_exit_ tracepoints to attach
    defines: dict[str, int | str] = field(default_factory=dict)
    # map name -> keys to insert (ints for u32 keys, bytes for comm keys)
    filters: dict[str, list[int | bytes]] = field(default_factory=dict)
    enter_fn: str = "on_sys_enter"
    exit_fn: str = "on_sys_exit"
    # attaches what is not a syscall tracepoint (bcc.BPF, tracefs root); runs before those
    extra_attach: Callable[[object, Path], None] | None = None
    # define -> (tracepoint, field): defined as 1 when this kernel's tracepoint has the field
    tracepoint_fields: dict[str, tuple[str, str]] = field(default_factory=dict)
    # C text generated for this run, put where the source has a line `@GENERATED@`
    generated: str = ""
    # the request traces every syscall (rules without -S): raw hooks only
    every_syscall: bool = False
    # why the request needs raw hooks whatever they cost ("": it does not)
    need_raw: str = ""


class ProbeError(Exception):
    pass


def expand_includes(name: str, seen: set[str] | None = None) -> str:
    """The program's text with our own `#include "x.h"` lines replaced by the files.

    BCC rewrites map operations (`events.perf_submit`, `inflight.lookup`) only in the main
    source, never in included files, so the shared headers must become part of it.
    """
    seen = set() if seen is None else seen
    out = []
    for line in (BPF_DIR / name).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith('#include "') and stripped.endswith('"'):
            inc = stripped[len('#include "'):-1]
            if (BPF_DIR / inc).is_file():
                if inc not in seen:
                    seen.add(inc)
                    out.append(f"/* {inc} */")
                    out.append(expand_includes(inc, seen))
                continue
        out.append(line)
    return "\n".join(out) + "\n"


def tracepoint_fields(tracefs: Path, event: str) -> list[str] | None:
    """The fields of a tracepoint's record on this kernel, in order (`sched/sched_process_exit`);
    None when tracefs has no such event."""
    try:
        lines = (tracefs / "events" / event / "format").read_text().splitlines()
    except OSError:
        return None
    return [ln.split(";")[0].split()[-1].split("[")[0] for ln in lines
            if ln.strip().startswith("field:")]


def syscall_arity(tracefs: Path, name: str) -> int:
    """How many arguments the sys_enter tracepoint records (its format lists them)."""
    names = tracepoint_fields(tracefs, f"syscalls/sys_enter_{name}")
    if not names or "__syscall_nr" not in names:
        return 6
    return len(names) - names.index("__syscall_nr") - 1


def _nargs_function(nargs: dict[int, int]) -> str:
    cases = "".join(f"\tif (nr == {nr})\n\t\treturn {n};\n" for nr, n in sorted(nargs.items()))
    return f"static __always_inline int syscall_nargs(int nr)\n{{\n{cases}\treturn 6;\n}}\n"


def load_layout() -> Layout:
    # AUDTRACE_OFFSETS=headers takes the no-BTF path on a kernel with BTF: the stock-kernel
    # lane (vagrant/vm-lane) tests it where the headers are the running kernel's
    if os.environ.get("AUDTRACE_OFFSETS") == "headers":
        return from_headers()
    try:
        return from_btf(BTF.load())
    except (OSError, BTFError):
        return from_headers()


PAGE = 4096
DEFAULT_BUFFER = 32 << 20          # bytes of event buffer, all CPUs together
POLL_MS = 50                        # the longest an event waits in the buffer when idle


def pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def traced_numbers(spec: ProgramSpec) -> set[int] | None:
    """The request's native syscall numbers (None: every syscall)."""
    if spec.every_syscall:
        return None
    arch = tables.host_arch()
    return {nr for name in spec.syscalls if (nr := tables.syscall_number(arch, name)) is not None}


def program_text(spec: ProgramSpec, layout: Layout, tracefs: Path,
                 buffer_bytes: int, features: list[str]) -> str:
    """The C text BCC compiles: the struct offsets, the syscall numbers and arities, the
    spec's constants and features, then the program with our headers and generated code."""
    arch = tables.host_arch()
    defines: dict[str, int | str] = {"MAX_CPUS": os.cpu_count() or 1,
                                     "RINGBUF_PAGES": buffer_bytes // PAGE}
    nargs: dict[int, int] = {}
    for name in spec.syscalls:
        nr = tables.syscall_number(arch, name)
        defines[f"NR_{name.upper()}"] = -1 if nr is None else nr
        if nr is not None:
            nargs[nr] = syscall_arity(tracefs, name)
    # arguments every attached syscall's record holds: read with plain loads (tracepoint.h)
    defines["TP_DIRECT_ARGS"] = min(nargs.values(), default=0)
    defines["TRACED_NR(nr)"] = hooks.traced_nr_macro(traced_numbers(spec))
    defines.update(hooks.compat_defines(layout))
    defines.update(spec.defines)
    for name, (event, member) in spec.tracepoint_fields.items():
        if member in (tracepoint_fields(tracefs, event) or ()):
            defines[name] = 1
    source = _nargs_function(nargs) + expand_includes(spec.source)
    if spec.generated:
        if "\n@GENERATED@\n" not in source:
            raise ProbeError(f"bpf/{spec.source} has no @GENERATED@ line for its generated code")
        source = source.replace("\n@GENERATED@\n", "\n" + spec.generated + "\n")
    prelude = layout.prelude() + "".join(f"#define {k} {v}\n" for k, v in defines.items())
    prelude += "".join(f"#define {f} 1\n" for f in features)
    return prelude + source


class Program:
    """One compiled and attached BPF program, and the buffer its events come through.

    `buffer_bytes` is the room for events waiting to be read, all CPUs together: the ring
    buffer's size (a power of two, at least a page), or split into the per-CPU perf buffers.
    """

    def __init__(self, spec: ProgramSpec, layout: Layout, tracefs: Path,
                 buffer_bytes: int = DEFAULT_BUFFER) -> None:
        from bcc import BPF  # imported late: `audtrace --help` must not need BCC

        self.spec = spec
        self.layout = layout
        self.missing: list[str] = []    # syscalls this kernel has no tracepoint for
        self.hooks: hooks.Hooks | None = None
        self.perf_lost = 0              # what the perf buffer's lost records said, a cross-check
        self.pending: list[bytes] = []  # copied by the callback, taken by the session
        self.buffer_bytes = pow2_at_least(max(buffer_bytes, PAGE) // PAGE) * PAGE
        features = optional_features(layout)
        numbers = traced_numbers(spec)
        self.missing = [n for n in spec.syscalls
                        if not (tracefs / "events/syscalls" / f"sys_enter_{n}").is_dir()]
        # a family built on syscall_hooks.h may be hooked either way: the machine's calls
        # are counted while BCC compiles (a second or more), then the hooks are chosen
        hookable = ((bool(spec.syscalls) or spec.every_syscall)
                    and "int on_raw_sys_enter(" in expand_includes(spec.source))
        rate = hooks.RateCount() if hookable else None
        try:
            while True:
                text = program_text(spec, layout, tracefs, self.buffer_bytes, features)
                try:
                    self.bpf = BPF(text=text.encode(), cflags=["-w"])
                    if self.hooks is None and hookable:
                        self.hooks = hooks.choose(numbers, self.missing, layout, rate,
                                                  spec.need_raw)
                    self._attach(tracefs)
                    break
                except Exception as e:  # BCC raises bare Exception for compile/load errors
                    if not features:
                        raise ProbeError(f"cannot load bpf/{spec.source}: {e}") from e
                    features.pop(0)
                    self.close()
        finally:
            if rate is not None:
                rate.close()
        self.features = features
        self.src = Source(text)
        self._fill_filters()

    def _attach(self, tracefs: Path) -> None:
        if self.spec.extra_attach is not None:
            self.spec.extra_attach(self.bpf, tracefs)
        if self.hooks is not None and self.hooks.kind == hooks.RAW:
            why = hooks.raw_possible(self.layout)
            if why:
                raise ProbeError(f"raw syscall hooks are needed and not usable here: {why}")
            self.bpf.attach_raw_tracepoint(tp="sys_enter", fn_name="on_raw_sys_enter")
            self.bpf.attach_raw_tracepoint(tp="sys_exit", fn_name="on_raw_sys_exit")
            self.missing = []
            return
        attached = 0
        for name in self.spec.syscalls:
            if name in self.missing:
                continue
            self.bpf.attach_tracepoint(tp=f"syscalls:sys_enter_{name}", fn_name=self.spec.enter_fn)
            self.bpf.attach_tracepoint(tp=f"syscalls:sys_exit_{name}", fn_name=self.spec.exit_fn)
            attached += 1
        if self.spec.syscalls and not attached:
            raise ProbeError("none of the syscall tracepoints exist: "
                             + ", ".join(self.spec.syscalls))

    def _fill_filters(self) -> None:
        for map_name, keys in self.spec.filters.items():
            table = self.bpf[map_name]
            for key in keys:
                if isinstance(key, bytes):
                    # zero-filled: a comm (checked <= 15 bytes) keeps its NUL, an address
                    # key (net's 20 bytes) is copied whole
                    k = table.Key()
                    data = key[:ctypes.sizeof(k)]
                    ctypes.memmove(ctypes.addressof(k), data, len(data))
                else:
                    k = table.Key(key)
                table[k] = table.Leaf(1)

    @property
    def ring(self) -> bool:
        return "USE_RINGBUF" in self.features

    def hooked(self) -> str:
        """Where the syscall programs are hooked and why, for the tracing line."""
        return self.hooks.describe() if self.hooks is not None else ""

    def output(self) -> str:
        """How events reach user space, for the tracing line."""
        mib = self.buffer_bytes / (1 << 20)
        size = f"{mib:g} MiB" if mib >= 1 else f"{self.buffer_bytes // 1024} KiB"
        return f"ring buffer {size}" if self.ring else f"perf buffers {size}"

    def open_events(self) -> None:
        """Events are copied as they are read (the kernel's buffer is reused at once) and
        wait in `pending` for the session; nothing else runs in the callback."""
        table = self.bpf["events"]
        keep = self.pending.append
        copy = ctypes.string_at

        if self.ring:
            def _ring(_ctx, data, size):
                keep(copy(data, size))
                return 0

            table.open_ring_buffer(_ring)
            return

        def _raw(_cpu, data, size):
            keep(copy(data, size))

        def _lost(count: int) -> None:
            self.perf_lost += count

        ncpu = os.cpu_count() or 1
        pages = max(1 << ((self.buffer_bytes // PAGE // ncpu).bit_length() - 1), 1)
        # woken every 64 events, and read whole at each poll whatever is waiting
        table.open_perf_buffer(_raw, page_cnt=pages, lost_cb=_lost,
                               wakeup_events=min(64, pages * PAGE // 512))

    def poll(self, timeout_ms: int) -> None:
        """Read what is waiting; wait up to `timeout_ms` for more only when nothing was."""
        before = len(self.pending)
        if self.ring:
            self.bpf.ring_buffer_consume()
            if timeout_ms and len(self.pending) == before:
                self.bpf.ring_buffer_poll(timeout_ms)
                self.bpf.ring_buffer_consume()
            return
        self.bpf.perf_buffer_consume()
        if timeout_ms and len(self.pending) == before:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)
            self.bpf.perf_buffer_consume()

    def take(self) -> list[bytes]:
        # the same list stays: the callbacks hold its append
        out = self.pending[:]
        self.pending.clear()
        return out

    def counter(self, map_name: str, index: int = 0) -> int:
        return int(self.bpf[map_name][ctypes.c_int(index)].value)

    def lost(self) -> int:
        """Events the BPF side could not deliver, counted where they were dropped, and runs
        the kernel skipped because the program was already running on that CPU (a nested
        interrupt): each may have been an event or a part of one."""
        table = self.bpf["drops"]
        return sum(int(v.value) for v in table.values()) + self.recursion_misses()

    def recursion_misses(self) -> int:
        total = 0
        for fn in getattr(self.bpf, "funcs", {}).values():
            try:
                with open(f"/proc/self/fdinfo/{fn.fd}") as f:
                    for line in f:
                        if line.startswith("recursion_misses:"):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                continue
        return total

    def detach(self) -> None:
        """Stop the program's hooks, keeping its maps and buffer: what it sent before can
        still be read (a reload's outgoing program, drained after its successor attached)."""
        bpf = self.bpf
        for fds, detach in ((bpf.kprobe_fds, bpf.detach_kprobe_event),
                            (bpf.uprobe_fds, bpf.detach_uprobe_event),
                            (bpf.tracepoint_fds, bpf.detach_tracepoint),
                            (bpf.raw_tracepoint_fds, bpf.detach_raw_tracepoint),
                            (bpf.kfunc_entry_fds, bpf.detach_kfunc),
                            (bpf.kfunc_exit_fds, bpf.detach_kretfunc),
                            (bpf.lsm_fds, bpf.detach_lsm)):
            for name in list(fds):
                detach(name)

    def close(self) -> None:
        bpf = getattr(self, "bpf", None)
        if bpf is not None:
            bpf.cleanup()
            self.bpf = None


def mechanism(layout: Layout) -> str:
    return "BTF" if layout.source == "btf" else "headers (no BTF: offsets from the header tree)"


def is_root() -> bool:
    return os.geteuid() == 0
