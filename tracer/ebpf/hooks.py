"""Where a family's syscall programs are hooked, chosen per request at run time
(bpf/syscall_hooks.h holds both pairs of entry points; the tracing line says which and why).

- per-syscall tracepoints (syscalls:sys_enter_X/sys_exit_X of each traced syscall): an
  untraced call pays only the kernel's tracepoint work flag; a traced call also pays the
  record the tracepoint prepares before the program runs.
- raw tracepoints sys_enter/sys_exit: no record, but two programs run on every syscall of
  the machine, which test the number first.

Measured on a 6.18 machine (2 vCPUs, retpolines and SRSO return thunks; tests/bench):
untraced call +35 ns per-syscall against +100 raw; traced call that the filter drops +218
against +139; the number of traced syscalls (1, 6, 40) changed neither. So what decides is
the share f of the machine's calls that are traced calls: per-syscall is cheaper below
f = 0.45, raw above. f is counted while BCC compiles (syscall_rate.py); at RAW_SHARE and
above, or when the set is unbounded, a traced syscall has no tracepoint, or there are more
than TRACEPOINTS_MAX pairs to attach, raw tracepoints are used.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

from audtrace.tracer.ebpf import syscall_rate
from audtrace.tracer.ebpf.layout import Layout

TRACEPOINTS = "tracepoints"
RAW = "raw"
# below both measured break-evens (0.45 raw tracepoints): an uncertain count errs towards raw
RAW_SHARE = 0.35
# more pairs than this: raw tracepoints. Attaching 332 pairs took ~0.5 s more than one pair
# of raw hooks, detaching them ~49 s (~70 ms a pair)
TRACEPOINTS_MAX = 32
COUNT_SECONDS = 0.2     # the least time the machine's calls are counted
# machine -> (layout member, bit): where a task shows it is in a 32-bit syscall
COMPAT = {"x86_64": ("OFF_TI_STATUS", 0x2),        # TS_COMPAT in thread_info.status
          "aarch64": ("OFF_TI_FLAGS", 1 << 22)}    # TIF_32BIT
FORCE_ENV = "AUDTRACE_HOOKS"    # "tracepoints" or "raw": for tests and benchmarks


@dataclass
class Hooks:
    kind: str           # TRACEPOINTS or RAW
    why: str

    def describe(self) -> str:
        how = ("per-syscall tracepoints" if self.kind == TRACEPOINTS
               else "raw tracepoints sys_enter/sys_exit")
        return f"syscalls via {how} ({self.why})"


def compat_defines(layout: Layout, machine: str | None = None) -> dict[str, int | str]:
    """COMPAT_OFF/COMPAT_MASK for the programs: how raw hooks tell a 32-bit call."""
    member, bit = COMPAT.get(machine or platform.machine(), (None, 0))
    if member is None or member not in layout.defines:
        return {}
    return {"COMPAT_OFF": member, "COMPAT_MASK": bit}


def raw_possible(layout: Layout, machine: str | None = None) -> str | None:
    """None when raw hooks can run a family exactly here, else why not."""
    if "OFF_REGS_ARG3" not in layout.defines:
        return "no register offsets"
    if not compat_defines(layout, machine):
        return "no way to tell 32-bit calls apart"
    return None


def traced_nr_macro(numbers: set[int] | None) -> str:
    """TRACED_NR(nr) as constants: one test per 64-number word, no map (every syscall of the
    machine runs it on raw hooks). None: every number."""
    if numbers is None:
        return "1"
    words: dict[int, int] = {}
    for nr in numbers:
        if nr >= 0:
            words[nr >> 6] = words.get(nr >> 6, 0) | 1 << (nr & 63)
    if not words:
        return "0"
    terms = [f"(((u64)(nr) >> 6) == {w} && ((0x{bits:x}ULL >> ((nr) & 63)) & 1))"
             for w, bits in sorted(words.items())]
    return "((nr) >= 0 && (" + " || ".join(terms) + "))"


class RateCount:
    """The machine's calls counted by number, from construction to `share()`; never
    raises: a counter that cannot run leaves the share unknown."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.error = ""
        self.counter: syscall_rate.SyscallCounter | None = None
        try:
            self.counter = syscall_rate.SyscallCounter()
        except (OSError, ValueError) as e:
            self.error = str(e) or type(e).__name__

    def share(self, numbers: set[int]) -> tuple[float | None, str]:
        """(traced share of the calls counted, or None; the words for the tracing line)."""
        if self.counter is None:
            return None, f"the machine's calls not counted: {self.error}"
        try:
            rest = COUNT_SECONDS - (time.monotonic() - self.started)
            if rest > 0:
                time.sleep(rest)
            f, total = syscall_rate.share(self.counter.counts(), numbers)
        except OSError as e:
            return None, f"the machine's calls not counted: {e}"
        finally:
            self.close()
        return f, f"traced calls {100 * f:.2g} % of the machine's {total} at start"

    def close(self) -> None:
        if self.counter is not None:
            self.counter.close()
            self.counter = None


def choose(numbers: set[int] | None, missing: list[str], layout: Layout,
           rate: RateCount | None, need_raw: str = "") -> Hooks:
    """The hooks for a request: its native syscall numbers (None: every syscall), the
    traced syscalls this kernel has no tracepoint for, and the machine's calls counted.
    `need_raw`: why the request needs raw hooks whatever they cost (32-bit calls)."""
    no_raw = raw_possible(layout)
    forced = os.environ.get(FORCE_ENV, "")
    if need_raw and not no_raw:
        return Hooks(RAW, need_raw)
    if forced in (TRACEPOINTS, RAW):
        if forced == RAW and no_raw:
            return Hooks(TRACEPOINTS, f"{FORCE_ENV}=raw refused: {no_raw}")
        if forced == TRACEPOINTS and numbers is None:
            return Hooks(RAW, f"{FORCE_ENV}=tracepoints refused: every syscall is traced")
        return Hooks(forced, f"{FORCE_ENV}={forced}")
    if numbers is None:
        return Hooks(RAW, "every syscall is traced")
    if no_raw:
        return Hooks(TRACEPOINTS, f"raw hooks not usable: {no_raw}")
    if missing:
        return Hooks(RAW, "no tracepoint for " + ", ".join(missing))
    if len(numbers) > TRACEPOINTS_MAX:
        return Hooks(RAW, f"{len(numbers)} syscalls: more than {TRACEPOINTS_MAX} tracepoint"
                          " pairs take long to attach and detach")
    if rate is None:
        return Hooks(TRACEPOINTS, "the machine's calls not counted")
    f, words = rate.share(numbers)
    if f is not None and f >= RAW_SHARE:
        return Hooks(RAW, words)
    return Hooks(TRACEPOINTS, words)
