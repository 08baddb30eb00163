"""Kernel struct offsets for the BPF programs, as `#define OFF_*` lines.

Taken from the running kernel's BTF. Without BTF, the offsets are left to the compiler
(`offsetof` against the header tree), which is right only when the headers belong to the
running kernel; the caller says so to the user.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass

from audtrace.tracer.btf import BTF, BTFError

# macro -> (BTF member path, the same member for offsetof() against headers)
MEMBERS: dict[str, tuple[str, str]] = {
    "OFF_TASK_TGID": ("task_struct.tgid", "struct task_struct, tgid"),
    "OFF_TASK_REAL_PARENT": ("task_struct.real_parent", "struct task_struct, real_parent"),
    "OFF_TASK_CRED": ("task_struct.cred", "struct task_struct, cred"),
    "OFF_TASK_REAL_CRED": ("task_struct.real_cred", "struct task_struct, real_cred"),
    "OFF_TASK_SIGNAL": ("task_struct.signal", "struct task_struct, signal"),
    "OFF_TASK_MM": ("task_struct.mm", "struct task_struct, mm"),
    "OFF_TASK_COMM": ("task_struct.comm", "struct task_struct, comm"),
    "OFF_CRED_UID": ("cred.uid", "struct cred, uid"),
    "OFF_CRED_GID": ("cred.gid", "struct cred, gid"),
    "OFF_CRED_SUID": ("cred.suid", "struct cred, suid"),
    "OFF_CRED_SGID": ("cred.sgid", "struct cred, sgid"),
    "OFF_CRED_EUID": ("cred.euid", "struct cred, euid"),
    "OFF_CRED_EGID": ("cred.egid", "struct cred, egid"),
    "OFF_CRED_FSUID": ("cred.fsuid", "struct cred, fsuid"),
    "OFF_CRED_FSGID": ("cred.fsgid", "struct cred, fsgid"),
    "OFF_SIGNAL_TTY": ("signal_struct.tty", "struct signal_struct, tty"),
    "OFF_TTY_NAME": ("tty_struct.name", "struct tty_struct, name"),
    "OFF_MM_ARG_START": ("mm_struct.arg_start", "struct mm_struct, arg_start"),
    "OFF_MM_ARG_END": ("mm_struct.arg_end", "struct mm_struct, arg_end"),
    "OFF_MM_EXE_FILE": ("mm_struct.exe_file", "struct mm_struct, exe_file"),
    "OFF_FILE_F_PATH": ("file.f_path", "struct file, f_path"),
    "OFF_PATH_DENTRY": ("path.dentry", "struct path, dentry"),
    "OFF_PATH_MNT": ("path.mnt", "struct path, mnt"),
    "OFF_DENTRY_D_PARENT": ("dentry.d_parent", "struct dentry, d_parent"),
    "OFF_DENTRY_D_NAME_NAME": ("dentry.d_name.name", "struct dentry, d_name.name"),
    "OFF_VFSMOUNT_MNT_ROOT": ("vfsmount.mnt_root", "struct vfsmount, mnt_root"),
    # struct mount is private to fs/ (fs/mount.h, not in any header package); its head has
    # kept this layout since 3.x, the fallback relies on that
    "OFF_MOUNT_MNT_PARENT": ("mount.mnt_parent", "16"),
    "OFF_MOUNT_MNT_MOUNTPOINT": ("mount.mnt_mountpoint", "24"),
    "OFF_MOUNT_MNT": ("mount.mnt", "32"),
    "OFF_SIGINFO_CODE": ("kernel_siginfo.si_code", "8"),
}
# present only with CONFIG_AUDIT: without them auid/ses are "unset"
OPTIONAL: dict[str, tuple[str, str]] = {
    "OFF_TASK_LOGINUID": ("task_struct.loginuid", "struct task_struct, loginuid"),
    "OFF_TASK_SESSIONID": ("task_struct.sessionid", "struct task_struct, sessionid"),
}
# user registers at syscall entry: the syscall number and a0..a3, per architecture
REGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("orig_ax", "di", "si", "dx", "r10"),
    "aarch64": ("syscallno", "orig_x0", "regs", "regs", "regs"),
}
HEADERS_INCLUDES = (
    "#include <linux/sched.h>\n#include <linux/sched/signal.h>\n#include <linux/cred.h>\n"
    "#include <linux/tty.h>\n#include <linux/fs.h>\n#include <linux/dcache.h>\n"
    "#include <linux/mount.h>\n#include <linux/mm_types.h>\n"
)


@dataclass
class Layout:
    source: str                 # "btf" or "headers"
    defines: dict[str, int | str]
    includes: str = ""          # extra #includes the headers fallback needs

    def prelude(self) -> str:
        lines = [f"#define {k} {v}" for k, v in self.defines.items()]
        return self.includes + "\n".join(lines) + "\n"


def _regs_from_btf(btf: BTF, machine: str) -> dict[str, int]:
    names = REGS.get(machine)
    if not names:
        return {}
    nr, *args = names
    out = {"OFF_REGS_NR": btf.offset(f"pt_regs.{nr}")}
    if machine == "aarch64":
        # a0 is orig_x0 (x0 is overwritten by the return value), a1..a3 are regs[1..3]
        base = btf.offset("pt_regs.regs")
        out.update(OFF_REGS_ARG0=btf.offset("pt_regs.orig_x0"),
                   OFF_REGS_ARG1=base + 8, OFF_REGS_ARG2=base + 16, OFF_REGS_ARG3=base + 24)
    else:
        for i, name in enumerate(args):
            out[f"OFF_REGS_ARG{i}"] = btf.offset(f"pt_regs.{name}")
    return out


def from_btf(btf: BTF, machine: str | None = None) -> Layout:
    machine = machine or platform.machine()
    defines: dict[str, int | str] = {m: btf.offset(p) for m, (p, _h) in MEMBERS.items()}
    for macro, (path, _h) in OPTIONAL.items():
        if btf.has_member(path):
            defines[macro] = btf.offset(path)
    with contextlib.suppress(BTFError):  # no register offsets: a2/a3 stay the tracepoint's
        defines.update(_regs_from_btf(btf, machine))
    return Layout("btf", defines)


def from_headers() -> Layout:
    defines: dict[str, int | str] = {}
    for macro, (_p, expr) in {**MEMBERS, **OPTIONAL}.items():
        defines[macro] = expr if expr.isdigit() else f"offsetof({expr})"
    return Layout("headers", defines, HEADERS_INCLUDES)


def has_register_offsets(layout: Layout) -> bool:
    return "OFF_REGS_NR" in layout.defines
