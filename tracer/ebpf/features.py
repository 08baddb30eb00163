"""What this kernel offers the BPF programs, each asked of the kernel here and now.

Every capability audtrace chooses a mechanism by is probed here, in one place (as libbpf-tools
keeps its probes in trace_helpers): BTF, kprobes, fentry, the ring buffer and a task's saved
registers, the kernel's own symbols and tracepoints. `audtrace doctor` reports the same
answers the subcommands act on. A probe says why not, in one line, when the answer is no.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

from audtrace.tracer.ebpf import system
from audtrace.tracer.ebpf.btf import BTF, VMLINUX, BTFError
from audtrace.tracer.ebpf.layout import Layout, has_register_offsets

KALLSYMS = Path("/proc/kallsyms")


def kernel_version() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def kconfig() -> dict[str, str]:
    """The running kernel's config, where the kernel exposes it."""
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{platform.release()}")):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        out = {}
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
        return out
    return {}


def btf_available() -> tuple[bool, str]:
    """The kernel's own type information: struct offsets come from it."""
    if VMLINUX.is_file():
        return True, str(VMLINUX)
    return False, f"no {VMLINUX}"


def kprobes_available() -> tuple[bool, str]:
    """kprobes exist when the kernel lists its kprobe blacklist or a kprobe PMU."""
    if Path("/sys/bus/event_source/devices/kprobe").is_dir():
        return True, "kprobe PMU present"
    root = system.tracefs_root()
    if root is not None and (root / "kprobe_events").exists():
        return True, "tracefs kprobe_events present"
    if kconfig().get("CONFIG_KPROBES") == "y":
        return True, "CONFIG_KPROBES=y"
    return False, "no kprobe PMU and no kprobe_events (CONFIG_KPROBES is not set?)"


def fentry_available() -> tuple[bool, str]:
    """Load a tiny fentry program: only the kernel can say (EPERM under some lockdowns)."""
    try:
        from bcc import BPF
    except ImportError:
        return False, "BCC not importable"
    if not BPF.support_kfunc():
        return False, "BCC or kernel lacks kfunc (fentry) support"
    try:
        with system.header_tree_for_bcc(system.find_header_tree()):
            b = BPF(text="KFUNC_PROBE(do_nanosleep) { return 0; }")
            b.cleanup()
        return True, "an fentry program loaded"
    except Exception as e:  # BCC raises bare Exception
        return False, f"fentry program load failed: {str(e).splitlines()[-1][:80]}"


# program types as the kernel numbers them (uapi bpf.h enum bpf_prog_type), and helpers
PROG_TYPES = {"kprobe": 2, "tracepoint": 5, "raw_tracepoint": 17}
_BPF_MAP_TYPE_TASK_STORAGE = 29
_BPF_FUNC_TASK_STORAGE_GET, _BPF_FUNC_GET_CURRENT_TASK_BTF = 156, 158


def _libbpf() -> ctypes.CDLL | None:
    """libbpf (BCC's own dependency): it asks the kernel by loading a tiny map or program."""
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        return None
    return lib if hasattr(lib, "libbpf_probe_bpf_helper") else None    # 0.7+


def task_storage_available(prog_type: str) -> tuple[bool, str]:
    """Task-local storage (BPF_MAP_TYPE_TASK_STORAGE with bpf_task_storage_get and
    bpf_get_current_task_btf) in programs of this type: a per-thread value found through the
    task itself, with no hash to update, look up and delete per call (Linux 5.11 for the map,
    5.12 for tracing programs). Asked of the kernel through libbpf's probes; without libbpf,
    judged by the version and BTF."""
    if not VMLINUX.is_file():
        return False, f"needs BTF (no {VMLINUX})"
    lib = _libbpf()
    if lib is None:
        ok = kernel_version() >= (5, 12)
        return ok, ("Linux 5.12+ (no libbpf to ask the kernel)" if ok
                    else "needs Linux 5.12 (no libbpf to ask the kernel)")
    pt = PROG_TYPES[prog_type]
    with _quiet_stderr():   # libbpf may print the refused probe
        if lib.libbpf_probe_bpf_map_type(_BPF_MAP_TYPE_TASK_STORAGE, None) != 1:
            return False, "the kernel refused a task storage map"
        for fn, name in ((_BPF_FUNC_TASK_STORAGE_GET, "bpf_task_storage_get"),
                         (_BPF_FUNC_GET_CURRENT_TASK_BTF, "bpf_get_current_task_btf")):
            if lib.libbpf_probe_bpf_helper(pt, fn, None) != 1:
                return False, f"{prog_type} programs may not call {name}"
    return True, "task storage map and helpers loaded"


def raw_tracepoint_available() -> tuple[bool, str]:
    """Raw tracepoint programs (Linux 4.17): sys_enter/sys_exit for every syscall at once."""
    lib = _libbpf()
    if lib is not None:
        with _quiet_stderr():
            ok = lib.libbpf_probe_bpf_prog_type(PROG_TYPES["raw_tracepoint"], None) == 1
        return ok, ("a raw tracepoint program loaded" if ok
                    else "the kernel refused a raw tracepoint program")
    try:
        from bcc import BPF
    except ImportError:
        return False, "BCC not importable"
    ok = bool(BPF.support_raw_tracepoint())
    return ok, "BCC says the kernel has them" if ok else "BCC says the kernel has none"


def optional_features(layout: Layout) -> list[str]:
    """What a program uses when this kernel allows it, newest first: the loader drops them
    one by one while the kernel refuses the program (tracer/ebpf/probes.py)."""
    out = []
    # bpf_task_pt_regs(): a2/a3 as the registers hold them (5.15)
    if has_register_offsets(layout) and kernel_version() >= (5, 15):
        out.append("HAVE_TASK_PT_REGS")
    # the BPF ring buffer (5.8); AUDTRACE_OUTPUT=perf takes the perf-buffer path on a
    # kernel with a ring buffer (tests run both paths on one machine)
    if kernel_version() >= (5, 8) and os.environ.get("AUDTRACE_OUTPUT") != "perf":
        out.append("USE_RINGBUF")
    return out


def kernel_symbols(names: tuple[str, ...], kallsyms: Path = KALLSYMS) -> set[str]:
    """Which of `names` the kernel has as text symbols under exactly that name (not inlined,
    not renamed to a .isra/.constprop clone): what a kprobe can be put on."""
    wanted, found = set(names), set()
    with open(kallsyms) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tT" and parts[2] in wanted:
                found.add(parts[2])
    return found


def kernel_function_exists(name: str) -> bool:
    try:
        with open(KALLSYMS) as f:
            return any(line.split()[2:3] == [name] for line in f)
    except OSError:
        return True   # cannot tell: let the attach say


def function_in_btf(name: str) -> bool | None:
    """Does the kernel's BTF describe function `name`? fentry/fexit attach by it: Debian 12's
    6.1 has no BTF for its syscall wrappers (__x64_sys_*), which kprobes reach. None: no
    BTF to read (let the attach say)."""
    if "." in name:     # a compiler-made local symbol (foo.isra.0) never has BTF
        return False
    try:
        return BTF.load().has_function(name)
    except (OSError, BTFError):
        return None


def function_mechanism(via: str, name: str | None = None) -> tuple[str | None, str]:
    """How to time a kernel function: ('fentry'|'kprobe'|None, why). fentry/fexit first
    (cheaper), then kprobe/kretprobe; `via` "fentry" or "kprobe" asks for one only. With
    `name`, fentry only when the kernel's BTF describes that function."""
    reasons = []
    if via in ("auto", "fentry"):
        if name is not None and function_in_btf(name) is False:
            ok, why = False, f"{name} is not in the kernel's BTF"
        else:
            with _quiet_stderr():   # libbpf prints the refused load itself
                ok, why = fentry_available()
        if ok:
            return "fentry", why
        if "super-user" in why:  # BCC's words for EPERM, misleading when root
            why = "the kernel refused a fentry program (EPERM, although root)"
        reasons.append(f"fentry/fexit: {why}")
    if via in ("auto", "kprobe"):
        ok, why = kprobes_available()
        if ok:
            # why fentry was passed over, if it was
            return "kprobe", "; ".join(f"no {r}" for r in reasons) or why
        reasons.append(f"kprobe/kretprobe: {why}")
    return None, "; ".join(reasons)


def tracepoints_exist(names: list[str]) -> bool:
    """Does this kernel have a sys_enter tracepoint for each of these syscalls?"""
    with system.tracefs_mounted(lambda _msg: None) as root:
        return all((root / "events/syscalls" / f"sys_enter_{n}").is_dir() for n in names)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
