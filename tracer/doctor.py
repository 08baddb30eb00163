"""`audtrace doctor`: what this machine offers, and which mechanism each subcommand uses.

Every answer is measured here and now (a file, a syscall, a tiny program load), never
assumed from the kernel version.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from audtrace.tracer.ebpf import features, system, tp_btf


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def lsm_state() -> str:
    try:
        return Path("/sys/kernel/security/lockdown").read_text().strip()
    except OSError:
        return "unknown (securityfs not mounted)"


def audit_state() -> tuple[bool, str]:
    try:
        from audtrace.tracer.audit.netlink import AuditNetlink

        with AuditNetlink() as nl:
            s = nl.status()
        return True, (f"enabled {s['enabled']}, pid {s['pid']}, backlog {s['backlog']}/"
                      f"{s['backlog_limit']}, lost {s['lost']}")
    except Exception as e:
        return False, f"kernel audit unreachable: {e}"


def auditd_running() -> tuple[bool, str]:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "auditd":
                    return True, f"auditd pid {p.name}"
            except OSError:
                pass
    return False, "no auditd process"


def checks() -> list[Check]:
    out = []
    out.append(Check("BTF", *features.btf_available()))
    root = system.tracefs_root()
    out.append(Check("tracefs", root is not None,
                     str(root) if root else "not mounted: audtrace mounts it while it runs"))
    tp = root is not None and (root / "events/syscalls/sys_enter_kill").is_dir()
    if root is None:
        tp_detail = "unknown until tracefs is mounted"
    else:
        tp_detail = "syscalls:sys_enter_kill present" if tp else "no syscall tracepoints"
    out.append(Check("tracepoints", tp or root is None, tp_detail))
    out.append(Check("kprobes", *features.kprobes_available()))
    out.append(Check("fentry", *features.fentry_available()))
    out.append(Check("raw_tp", *features.raw_tracepoint_available()))
    out.append(Check("tp_btf", *tp_btf.available()))
    out.append(Check("task storage", *features.task_storage_available("raw_tracepoint")))
    tree = system.find_header_tree()
    out.append(Check("header tree", tree.kind != "none", tree.note))
    ok, detail = audit_state()
    out.append(Check("kernel audit", ok, detail))
    ok, detail = auditd_running()
    out.append(Check("auditd", ok, detail))
    out.append(Check("lockdown", True, lsm_state()))
    out.append(Check("ausearch", bool(shutil.which("ausearch")),
                     shutil.which("ausearch") or "not installed (package auditd)"))
    return out


def mechanisms(by_name: dict[str, Check]) -> dict[str, str]:
    offsets = "BTF offsets" if by_name["BTF"].ok else "header offsets (no BTF)"
    return {
        "kill": "tracepoints syscalls:sys_enter/exit_* or raw tracepoints sys_enter/exit"
                " (chosen at start by the traced share of calls) + raw tracepoint"
                f" signal_generate, {offsets}",
        "kill --source audit": "kernel audit rules over netlink, multicast group readlog"
        + ("" if by_name["kernel audit"].ok else " (unavailable)"),
        "latency --syscall": _syscall_latency(by_name) + " (+ raw tracepoint sched_switch"
                             " for exit/exit_group), histograms in BPF maps",
        "latency --function": _function_latency(by_name["fentry"], by_name["kprobes"]),
        "bind": "tracepoints syscalls:sys_enter/exit_bind or raw sys_enter/exit, sockaddr"
                " read in the kernel;"
                " conflicts by " + ("kprobes on the kernel's decision" if by_name["kprobes"].ok
                                    else "sock_diag after the failure (no kprobes)"),
    }


def _syscall_latency(by_name: dict[str, Check]) -> str:
    """What `latency --syscall` chooses (subcommands.latency.choose_mechanism)."""
    hooks = ("tp_btf sys_enter/sys_exit" if by_name["tp_btf"].ok
             else "raw tracepoints sys_enter/sys_exit" if by_name["raw_tp"].ok
             else "tracepoints syscalls:sys_enter/exit_*")
    stamps = "task storage" if by_name["task storage"].ok else "a per-thread hash"
    return f"{hooks}, start stamps in {stamps}"


def _function_latency(fentry: Check, kprobes: Check) -> str:
    """The order `latency --function` tries them in (features.function_mechanism)."""
    if fentry.ok:
        # fentry attaches by BTF: a function it does not describe is reached by kprobe
        return ("fentry/fexit; kprobe/kretprobe for a function BTF does not describe"
                if kprobes.ok else "fentry/fexit (functions BTF describes)")
    if kprobes.ok:
        return "kprobe/kretprobe (no fentry: " + fentry.detail + ")"
    return f"unavailable: no fentry ({fentry.detail}), no kprobes ({kprobes.detail})"


def main(fmt: str) -> None:
    with system.tracefs_mounted(lambda _m: None) if os.geteuid() == 0 else _null():
        results = checks()
    by_name = {c.name: c for c in results}
    mech = mechanisms(by_name)
    if fmt == "json":
        print(orjson.dumps({"kernel": platform.release(), "checks": [asdict(c) for c in results],
                            "mechanisms": mech}).decode())
        return
    print(f"kernel {platform.release()} {platform.machine()}")
    for c in results:
        print(f"  {'yes' if c.ok else 'no ':3}  {c.name:13} {c.detail}")
    print("subcommands:")
    for name, how in mech.items():
        print(f"  {name:20} {how}")


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *_):
        return False
