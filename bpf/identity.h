/* The acting task's audit identity, captured in the kernel at the moment of the syscall.
 *
 * Kernel struct members are read at byte offsets that user space takes from the running
 * kernel's BTF and passes in as OFF_* constants (see tracer/kernel_layout.py), never through
 * the header tree BCC compiles against, whose layouts may belong to another kernel.
 */
#ifndef AUDTRACE_IDENTITY_H
#define AUDTRACE_IDENTITY_H

#define COMM_LEN 16
#define TTY_LEN 32
#define PROCTITLE_LEN 128   /* audit's MAX_PROCTITLE_AUDIT_LEN */
#define EXE_DEPTH 16        /* path components kept, leaf first */
#define EXE_PART 64         /* bytes of one component, its NUL included */
#define PATH_SPAN (EXE_DEPTH * EXE_PART)

#define READ_KERNEL(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)(base) + (off))

struct comm_key {
	char comm[COMM_LEN];
};

/* Who acts, as audit's SYSCALL record names it. The bytes of one identity are the same for
 * every call of one task with unchanged credentials: user space renders them once. */
struct identity {
	u32 pid, ppid;
	u32 auid, ses;
	u32 uid, gid, euid, suid, fsuid, egid, sgid, fsgid;
	char comm[COMM_LEN];
	char tty[TTY_LEN];
};

/* A path as walked in the kernel: its components leaf first, each ending with its NUL, one
 * after the other; user space reverses and joins them. Sent at its used length. */
struct exe_path {
	u16 len;                /* bytes of buf in use */
	u16 depth;              /* components in buf */
	u16 truncated;          /* more components than EXE_DEPTH */
	u16 pad;
	/* a component is written at a variable offset below PATH_SPAN, up to EXE_PART bytes:
	 * the verifier must see room for the last one */
	char buf[PATH_SPAN + EXE_PART];
};

struct proctitle {
	u32 len;
	char buf[PROCTITLE_LEN];
};

/* What OBJ_PID says of a signal's target. */
struct target {
	u32 pid, auid, uid, ses;
	char comm[COMM_LEN];
};

static __always_inline u32 task_u32(void *task, u32 off)
{
	u32 v = 0;
	READ_KERNEL(v, task, off);
	return v;
}

static __always_inline void *task_ptr(void *task, u32 off)
{
	void *p = 0;
	READ_KERNEL(p, task, off);
	return p;
}

/* The task a pid number names in the caller's pid namespace: find_vpid() then
 * pid_task(PIDTYPE_PID), for a syscall that named a target but generated no signal
 * (refused, signal 0), as audit's OBJ_PID still names it. The namespace's IDR is an
 * xarray: descend from its head, XA_CHUNK_SHIFT bits of the index per level, until an
 * entry is no longer an internal node. 0 when nothing answers to the number. */
/* our names: the header tree's xarray.h may be in the same unit */
#define IDR_CHUNK (SIZE_XA_NODE_SLOTS / 8)
#define IDR_MAX_LEVELS 6        /* 6 bits a level (4 with CONFIG_BASE_SMALL): 32-bit ids */

static __always_inline int idr_is_node(unsigned long entry)
{
	return (entry & 3) == 2 && entry > 4096;
}

static __always_inline void *task_by_vpid(s32 nr)
{
	void *pid = task_ptr((void *)bpf_get_current_task(), OFF_TASK_THREAD_PID);
	u32 level = task_u32(pid, OFF_PID_LEVEL);
	void *ns = task_ptr(pid, OFF_PID_NUMBERS + (level & 31) * SIZE_UPID + OFF_UPID_NS);
	u64 index = (u32)(nr - (s32)task_u32(ns, OFF_PIDNS_IDR_BASE));
	unsigned long entry = (unsigned long)task_ptr(ns, OFF_PIDNS_XA_HEAD);
	u8 shift = 0;

	if (nr <= 0 || !ns)
		return 0;
	if (!idr_is_node(entry))
		return index == 0 ? (void *)entry : 0;  /* a head entry holds index 0 alone */
	READ_KERNEL(shift, entry - 2, OFF_XA_NODE_SHIFT);
	if ((index >> shift) >= IDR_CHUNK)
		return 0;                               /* past the tree's reach */
#pragma unroll
	for (int i = 0; i < IDR_MAX_LEVELS; i++) {
		void *node = (void *)(entry - 2);

		READ_KERNEL(shift, node, OFF_XA_NODE_SHIFT);
		entry = (unsigned long)task_ptr(node, OFF_XA_NODE_SLOTS +
						((index >> (shift & 63)) & (IDR_CHUNK - 1)) * 8);
		if (!idr_is_node(entry))
			break;
	}
	/* NULL (allocated, not attached yet) or an internal entry: nothing answers */
	if (!entry || (entry & 3) == 2)
		return 0;
	entry = (unsigned long)task_ptr((void *)entry, OFF_PID_TASKS);  /* tasks[PIDTYPE_PID] */
	return entry ? (void *)(entry - OFF_TASK_PID_LINKS) : 0;
}

static __always_inline void capture_target(struct target *t, void *task)
{
	void *real_cred = task_ptr(task, OFF_TASK_REAL_CRED);

	t->pid = task_u32(task, OFF_TASK_TGID);
#ifdef OFF_TASK_LOGINUID
	t->auid = task_u32(task, OFF_TASK_LOGINUID);
	t->ses = task_u32(task, OFF_TASK_SESSIONID);
#else
	t->auid = (u32)-1;
	t->ses = (u32)-1;
#endif
	t->uid = task_u32(real_cred, OFF_CRED_UID);
	bpf_probe_read_kernel_str(t->comm, sizeof(t->comm), task + OFF_TASK_COMM);
}

static __always_inline void capture_identity(struct identity *id, void *task)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	void *cred = task_ptr(task, OFF_TASK_CRED);
	void *parent = task_ptr(task, OFF_TASK_REAL_PARENT);
	void *signal = task_ptr(task, OFF_TASK_SIGNAL);
	void *tty = task_ptr(signal, OFF_SIGNAL_TTY);

	id->pid = pid_tgid >> 32;
	id->ppid = task_u32(parent, OFF_TASK_TGID);
#ifdef OFF_TASK_LOGINUID
	id->auid = task_u32(task, OFF_TASK_LOGINUID);
	id->ses = task_u32(task, OFF_TASK_SESSIONID);
#else
	id->auid = (u32)-1;
	id->ses = (u32)-1;
#endif
	id->uid = task_u32(cred, OFF_CRED_UID);
	id->gid = task_u32(cred, OFF_CRED_GID);
	id->euid = task_u32(cred, OFF_CRED_EUID);
	id->suid = task_u32(cred, OFF_CRED_SUID);
	id->fsuid = task_u32(cred, OFF_CRED_FSUID);
	id->egid = task_u32(cred, OFF_CRED_EGID);
	id->sgid = task_u32(cred, OFF_CRED_SGID);
	id->fsgid = task_u32(cred, OFF_CRED_FSGID);
	bpf_get_current_comm(id->comm, sizeof(id->comm));
	id->tty[0] = 0;
	if (tty)
		bpf_probe_read_kernel_str(id->tty, sizeof(id->tty), tty + OFF_TTY_NAME);
}

/* argv of the current task as audit's PROCTITLE takes it: the first 128 bytes. */
static __always_inline void capture_proctitle(struct proctitle *pt, void *task)
{
	void *mm = task_ptr(task, OFF_TASK_MM);
	unsigned long start = 0, end = 0;
	u32 len;

	pt->len = 0;
	if (!mm)
		return;
	READ_KERNEL(start, mm, OFF_MM_ARG_START);
	READ_KERNEL(end, mm, OFF_MM_ARG_END);
	if (end <= start)
		return;
	len = end - start;
	if (len > PROCTITLE_LEN)
		len = PROCTITLE_LEN;
	/* a fixed-size read keeps the verifier simple; the bytes past arg_end are the
	 * environment's, on the same stack pages, and are cut off by len */
	if (bpf_probe_read_user(pt->buf, PROCTITLE_LEN, (void *)start) == 0)
		pt->len = len;
}

/* A path, walked up from (dentry, vfsmount) through dentries and across mounts: the
 * executable's, a file's behind an fd, the working directory's. d_path() is not callable
 * from tracepoints, so the components travel leaf first and user space joins them.
 * Unrolled, it is large: a program has room for two of them within the 4096 instructions
 * allowed where the loader lacks CAP_BPF in the initial user namespace. (A bounded loop
 * instead passes the verifier's complexity limit.) */
static __always_inline void capture_path(struct exe_path *out, void *dentry, void *vfsmnt)
{
	void *mnt = vfsmnt - OFF_MOUNT_MNT;
	u32 n = 0, off = 0;

	out->len = 0;
	out->depth = 0;
	out->truncated = 0;
	if (!dentry || !vfsmnt)
		return;
#pragma unroll
	for (int i = 0; i < EXE_DEPTH + 4; i++) {
		void *root = task_ptr(mnt, OFF_MOUNT_MNT + OFF_VFSMOUNT_MNT_ROOT);
		void *parent;
		long got;

		if (dentry == root) {
			void *mnt_parent = task_ptr(mnt, OFF_MOUNT_MNT_PARENT);

			if (mnt_parent == mnt)
				break;
			dentry = task_ptr(mnt, OFF_MOUNT_MNT_MOUNTPOINT);
			mnt = mnt_parent;
			continue;
		}
		parent = task_ptr(dentry, OFF_DENTRY_D_PARENT);
		if (parent == dentry)
			break;
		if (n >= EXE_DEPTH || off >= PATH_SPAN - EXE_PART) {
			out->truncated = 1;
			break;
		}
		/* a failed read leaves an empty string (the helper zeroes what it could not
		 * read): an empty component */
		got = bpf_probe_read_kernel_str(&out->buf[off], EXE_PART,
						task_ptr(dentry, OFF_DENTRY_D_NAME_NAME));
		if (got < 1)
			got = 1;
		/* off stays below PATH_SPAN (the test above): the masks change no value, but the
		 * verifier then sees the same ranges on every path and prunes instead of walking
		 * each combination of component lengths (6.1's verifier gives up otherwise) */
		off = (off + got) & (PATH_SPAN - 1);
		n = (n + 1) & 31;
		dentry = parent;
	}
	out->len = off;
	out->depth = n;
}

/* The path of a struct path at `p` (a file's f_path, fs_struct's pwd). */
static __always_inline void capture_struct_path(struct exe_path *out, void *p)
{
	capture_path(out, task_ptr(p, OFF_PATH_DENTRY), task_ptr(p, OFF_PATH_MNT));
}

/* The executable's path: mm->exe_file. */
static __always_inline void capture_exe(struct exe_path *exe, void *task)
{
	void *mm = task_ptr(task, OFF_TASK_MM);
	void *file = mm ? task_ptr(mm, OFF_MM_EXE_FILE) : 0;

	exe->len = 0;
	exe->depth = 0;
	exe->truncated = 0;
	if (!file)
		return;
	capture_struct_path(exe, file + OFF_FILE_F_PATH);
}

/* Syscall arguments a0..a3 as audit records them: the registers at entry, also those past
 * the syscall's own arity (audit prints them whatever they hold). */
static __always_inline void capture_args(u64 *args, const u64 *tp_args, int nr, int nargs)
{
	/* a tracepoint record holds only the syscall's own arguments */
	args[0] = nargs > 0 ? tp_args[0] : 0;
	args[1] = nargs > 1 ? tp_args[1] : 0;
	args[2] = nargs > 2 ? tp_args[2] : 0;
	args[3] = nargs > 3 ? tp_args[3] : 0;
#ifdef HAVE_TASK_PT_REGS
	{
		struct task_struct *t = bpf_get_current_task_btf();
		void *regs = (void *)bpf_task_pt_regs(t);
		long orig = -1;

		READ_KERNEL(orig, regs, OFF_REGS_NR);
		if (orig == nr) {
			READ_KERNEL(args[0], regs, OFF_REGS_ARG0);
			READ_KERNEL(args[1], regs, OFF_REGS_ARG1);
			READ_KERNEL(args[2], regs, OFF_REGS_ARG2);
			READ_KERNEL(args[3], regs, OFF_REGS_ARG3);
		}
	}
#endif
}

/* The layout of a syscall tracepoint record (syscalls:sys_enter_* / sys_exit_*): common
 * header, the syscall number, then each argument widened to 8 bytes. Declared once so one
 * program serves every syscall of a family. */
struct sys_enter_ctx {
	u64 common;
	s32 nr;
	u32 pad;
	u64 args[6];
};

struct sys_exit_ctx {
	u64 common;
	s32 nr;
	u32 pad;
	s64 ret;
};

#endif
