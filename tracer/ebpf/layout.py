"""Kernel struct offsets for the BPF programs, as `#define OFF_*` lines.

Taken from the running kernel's BTF. Without BTF, the offsets are left to the compiler
(`offsetof` against the header tree), which is right only when the headers belong to the
running kernel; the caller says so to the user.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass

from audtrace.tracer.ebpf.btf import BTF, BTFError

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
    # threads still alive: 0 once the last one has begun to exit (exit, before Linux 6.4's
    # group_dead in sched_process_exit)
    "OFF_SIGNAL_LIVE": ("signal_struct.live", "struct signal_struct, live"),
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
    # set once the task has exited: its last context switch ends exit/exit_group (latency)
    "OFF_TASK_EXIT_STATE": ("task_struct.exit_state", "struct task_struct, exit_state"),
    # the caller's network namespace inode (bind)
    "OFF_TASK_NSPROXY": ("task_struct.nsproxy", "struct task_struct, nsproxy"),
    "OFF_NSPROXY_NET_NS": ("nsproxy.net_ns", "struct nsproxy, net_ns"),
    "OFF_NET_NS_INUM": ("net.ns.inum", "struct net, ns.inum"),
    # the executable's inode and device: `-F exe=` compares them (rules)
    "OFF_FILE_F_INODE": ("file.f_inode", "struct file, f_inode"),
    "OFF_INODE_I_INO": ("inode.i_ino", "struct inode, i_ino"),
    "OFF_INODE_I_SB": ("inode.i_sb", "struct inode, i_sb"),
    "OFF_SUPER_S_DEV": ("super_block.s_dev", "struct super_block, s_dev"),
    # supplementary groups: `-F gid=`/`egid=` also match them, as the kernel's groups_search
    "OFF_CRED_GROUP_INFO": ("cred.group_info", "struct cred, group_info"),
    "OFF_GROUP_INFO_NGROUPS": ("group_info.ngroups", "struct group_info, ngroups"),
    "OFF_GROUP_INFO_GID": ("group_info.gid", "struct group_info, gid"),
    # a file behind an fd, its inode as PATH gives it, the working directory (file.h)
    "OFF_TASK_FILES": ("task_struct.files", "struct task_struct, files"),
    "OFF_TASK_FS": ("task_struct.fs", "struct task_struct, fs"),
    "OFF_FILES_FDT": ("files_struct.fdt", "struct files_struct, fdt"),
    "OFF_FDT_MAX_FDS": ("fdtable.max_fds", "struct fdtable, max_fds"),
    "OFF_FDT_FD": ("fdtable.fd", "struct fdtable, fd"),
    "OFF_FS_PWD": ("fs_struct.pwd", "struct fs_struct, pwd"),
    "OFF_INODE_I_MODE": ("inode.i_mode", "struct inode, i_mode"),
    "OFF_INODE_I_UID": ("inode.i_uid", "struct inode, i_uid"),
    "OFF_INODE_I_GID": ("inode.i_gid", "struct inode, i_gid"),
    "OFF_INODE_I_RDEV": ("inode.i_rdev", "struct inode, i_rdev"),
    # argc sits at the top of a new image's stack (exec); how a task ended (exit)
    "OFF_MM_START_STACK": ("mm_struct.start_stack", "struct mm_struct, start_stack"),
    "OFF_TASK_EXIT_CODE": ("task_struct.exit_code", "struct task_struct, exit_code"),
    # pid number -> task in the caller's namespace, as find_vpid + pid_task (pid.h)
    "OFF_TASK_THREAD_PID": ("task_struct.thread_pid", "struct task_struct, thread_pid"),
    "OFF_TASK_PID_LINKS": ("task_struct.pid_links", "struct task_struct, pid_links"),
    "OFF_PID_LEVEL": ("pid.level", "struct pid, level"),
    "OFF_PID_NUMBERS": ("pid.numbers", "struct pid, numbers"),
    "OFF_PID_TASKS": ("pid.tasks", "struct pid, tasks"),
    "OFF_UPID_NS": ("upid.ns", "struct upid, ns"),
    "OFF_PIDNS_IDR_BASE": ("pid_namespace.idr.idr_base", "struct pid_namespace, idr.idr_base"),
    "OFF_PIDNS_XA_HEAD": ("pid_namespace.idr.idr_rt.xa_head",
                          "struct pid_namespace, idr.idr_rt.xa_head"),
    "OFF_XA_NODE_SHIFT": ("xa_node.shift", "struct xa_node, shift"),
    "OFF_XA_NODE_SLOTS": ("xa_node.slots", "struct xa_node, slots"),
}
# macro -> (BTF type or member path, the same for sizeof() against headers)
SIZES: dict[str, tuple[str, str]] = {
    "SIZE_UPID": ("upid", "sizeof(struct upid)"),
    "SIZE_XA_NODE_SLOTS": ("xa_node.slots", "sizeof(((struct xa_node *)0)->slots)"),
}
# present only with CONFIG_AUDIT: without them auid/ses are "unset"
OPTIONAL: dict[str, tuple[str, str]] = {
    "OFF_TASK_LOGINUID": ("task_struct.loginuid", "struct task_struct, loginuid"),
    "OFF_TASK_SESSIONID": ("task_struct.sessionid", "struct task_struct, sessionid"),
    # CONFIG_AUDITSYSCALL: a task without one is never audited
    "OFF_TASK_AUDIT_CONTEXT": ("task_struct.audit_context", "struct task_struct, audit_context"),
    # where a 32-bit (compat) syscall shows: x86's TS_COMPAT status, arm64's TIF_32BIT flag
    "OFF_TI_STATUS": ("task_struct.thread_info.status", "struct task_struct, thread_info.status"),
    "OFF_TI_FLAGS": ("task_struct.thread_info.flags", "struct task_struct, thread_info.flags"),
}
# user registers at syscall entry: the syscall number and a0..a3, per architecture
REGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("orig_ax", "di", "si", "dx", "r10"),
    "aarch64": ("syscallno", "orig_x0", "regs", "regs", "regs"),
}
# a 32-bit (ia32) call's a0..a3, as the kernel hands them to audit (syscall_get_arguments)
COMPAT_REGS: dict[str, tuple[str, ...]] = {"x86_64": ("bx", "cx", "dx", "si")}
HEADERS_INCLUDES = (
    "#include <linux/sched.h>\n#include <linux/sched/signal.h>\n#include <linux/cred.h>\n"
    "#include <linux/tty.h>\n#include <linux/fs.h>\n#include <linux/dcache.h>\n"
    "#include <linux/mount.h>\n#include <linux/mm_types.h>\n"
    "#include <linux/nsproxy.h>\n#include <net/net_namespace.h>\n"
    "#include <linux/fdtable.h>\n#include <linux/fs_struct.h>\n"
    "#include <linux/pid.h>\n#include <linux/pid_namespace.h>\n#include <linux/xarray.h>\n"
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
    for i, name in enumerate(COMPAT_REGS.get(machine, ())):
        out[f"OFF_REGS_COMPAT_ARG{i}"] = btf.offset(f"pt_regs.{name}")
    return out


def from_btf(btf: BTF, machine: str | None = None) -> Layout:
    machine = machine or platform.machine()
    defines: dict[str, int | str] = {m: btf.offset(p) for m, (p, _h) in MEMBERS.items()}
    defines.update({m: btf.sizeof(p) for m, (p, _h) in SIZES.items()})
    for macro, (path, _h) in OPTIONAL.items():
        if btf.has_member(path):
            defines[macro] = btf.offset(path)
    with contextlib.suppress(BTFError):  # no register offsets: a2/a3 stay the tracepoint's
        defines.update(_regs_from_btf(btf, machine))
    return Layout("btf", defines)


# pt_regs is user ABI: its layout in any header tree is the running kernel's
HEADER_REGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("orig_ax", "di", "si", "dx", "r10"),
    "aarch64": ("syscallno", "orig_x0", "regs[1]", "regs[2]", "regs[3]"),
}


def from_headers(machine: str | None = None) -> Layout:
    defines: dict[str, int | str] = {}
    for macro, (_p, expr) in {**MEMBERS, **OPTIONAL}.items():
        defines[macro] = expr if expr.isdigit() else f"offsetof({expr})"
    defines.update({m: expr for m, (_p, expr) in SIZES.items()})
    machine = machine or platform.machine()
    regs = HEADER_REGS.get(machine)
    if regs:
        defines["OFF_REGS_NR"] = f"offsetof(struct pt_regs, {regs[0]})"
        for i, member in enumerate(regs[1:]):
            defines[f"OFF_REGS_ARG{i}"] = f"offsetof(struct pt_regs, {member})"
    for i, member in enumerate(COMPAT_REGS.get(machine, ())):
        defines[f"OFF_REGS_COMPAT_ARG{i}"] = f"offsetof(struct pt_regs, {member})"
    return Layout("headers", defines, HEADERS_INCLUDES)


def has_register_offsets(layout: Layout) -> bool:
    return "OFF_REGS_NR" in layout.defines


def kernel_dev(st_dev: int) -> int:
    """stat()'s st_dev as the kernel's dev_t, which the programs read (s_dev, i_rdev) and
    audit prints: MKDEV, major << 20 | minor."""
    return os.major(st_dev) << 20 | os.minor(st_dev)
