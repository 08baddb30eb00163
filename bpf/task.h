/* The acting task's audit identity, captured in the kernel at the moment of the syscall:
 * who acts (SYSCALL's identity fields), its command line (PROCTITLE), a signal's target
 * (OBJ_PID).
 */
#ifndef AUDTRACE_TASK_H
#define AUDTRACE_TASK_H

#include "kernel.h"

#define COMM_LEN 16
#define TTY_LEN 32
#define PROCTITLE_LEN 128   /* audit's MAX_PROCTITLE_AUDIT_LEN */

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

struct proctitle {
	u32 len;
	char buf[PROCTITLE_LEN];
};

/* What OBJ_PID says of a signal's target. */
struct target {
	u32 pid, auid, uid, ses;
	char comm[COMM_LEN];
};

/* The task's login uid and session: "unset" without CONFIG_AUDIT. */
static __always_inline void capture_session(u32 *auid, u32 *ses, void *task)
{
#ifdef OFF_TASK_LOGINUID
	*auid = read_u32(task, OFF_TASK_LOGINUID);
	*ses = read_u32(task, OFF_TASK_SESSIONID);
#else
	*auid = (u32)-1;
	*ses = (u32)-1;
#endif
}

static __always_inline void capture_target(struct target *t, void *task)
{
	void *real_cred = read_ptr(task, OFF_TASK_REAL_CRED);

	t->pid = read_u32(task, OFF_TASK_TGID);
	capture_session(&t->auid, &t->ses, task);
	t->uid = read_u32(real_cred, OFF_CRED_UID);
	bpf_probe_read_kernel_str(t->comm, sizeof(t->comm), task + OFF_TASK_COMM);
}

static __always_inline void capture_identity(struct identity *id, void *task)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	void *cred = read_ptr(task, OFF_TASK_CRED);
	void *parent = read_ptr(task, OFF_TASK_REAL_PARENT);
	void *signal = read_ptr(task, OFF_TASK_SIGNAL);
	void *tty = read_ptr(signal, OFF_SIGNAL_TTY);

	id->pid = pid_tgid >> 32;
	id->ppid = read_u32(parent, OFF_TASK_TGID);
	capture_session(&id->auid, &id->ses, task);
	id->uid = read_u32(cred, OFF_CRED_UID);
	id->gid = read_u32(cred, OFF_CRED_GID);
	id->euid = read_u32(cred, OFF_CRED_EUID);
	id->suid = read_u32(cred, OFF_CRED_SUID);
	id->fsuid = read_u32(cred, OFF_CRED_FSUID);
	id->egid = read_u32(cred, OFF_CRED_EGID);
	id->sgid = read_u32(cred, OFF_CRED_SGID);
	id->fsgid = read_u32(cred, OFF_CRED_FSGID);
	bpf_get_current_comm(id->comm, sizeof(id->comm));
	id->tty[0] = 0;
	if (tty)
		bpf_probe_read_kernel_str(id->tty, sizeof(id->tty), tty + OFF_TTY_NAME);
}

/* argv of the current task as audit's PROCTITLE takes it: the first 128 bytes. */
static __always_inline void capture_proctitle(struct proctitle *pt, void *task)
{
	void *mm = read_ptr(task, OFF_TASK_MM);
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

/* The task's executable: mm->exe_file, 0 for a kernel thread. */
static __always_inline void *exe_file(void *task)
{
	void *mm = read_ptr(task, OFF_TASK_MM);

	return mm ? read_ptr(mm, OFF_MM_EXE_FILE) : 0;
}

#endif
