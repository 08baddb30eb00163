/* auditctl rules run as in-kernel filters (user space: tracer/ebpf/rule_filter.py, which
 * generates rules_enter() and rules_match() and prepends them).
 *
 * Kernel audit judges a syscall at its exit, with the task's credentials at that moment
 * (a setuid execve matches `-F euid=0` on its way out) and the arguments saved at entry.
 * So: sys_enter keeps the arguments of a call some `always` rule could match (arguments
 * and syscall only, cheap), sys_exit captures the identity and asks rules_match() which
 * rule decides, as the kernel walks its exit list: first match wins, `never` drops.
 * exit and exit_group never return: judged at entry with no result, as audit writes them
 * (no success=, no exit=).
 *
 * Attached to the syscalls:sys_enter_X/sys_exit_X tracepoints of the rules' syscalls, or
 * (RAW_SYSCALLS) to raw_syscalls:sys_enter/sys_exit for every syscall; those also fire for
 * 32-bit (compat) calls, which are skipped here: 32-bit rules run in kernel audit.
 * TRACE_TREE: only the tasks of the traced process tree (`audtrace trace`); a fork of a
 * traced process adds the child, in the kernel, before the child can run.
 */
struct family_extra {
	u32 rule;               /* the deciding rule's number (1-based) in user space's table */
	u32 returned;           /* 0 for exit/exit_group: no result */
};

#include "syscall_event.h"
#include "file.h"

#ifdef TRACE_TREE
BPF_HASH(traced, u32, u8, 65536);
#endif

/* Is gid one of the task's supplementary groups? The kernel's groups_search: a binary
 * search of the sorted group_info->gid[]; 17 halvings cover NGROUPS_MAX (65536). */
static __always_inline int in_groups(u32 gid)
{
	void *task = (void *)bpf_get_current_task();
	void *gi = read_ptr(read_ptr(task, OFF_TASK_CRED), OFF_CRED_GROUP_INFO);
	u32 lo = 0, hi = 0;

	if (!gi)
		return 0;
	hi = read_u32(gi, OFF_GROUP_INFO_NGROUPS);
	/* a bounded loop (kernel >= 5.3): the data-dependent break keeps it from unrolling */
	for (int i = 0; i < 17; i++) {
		u32 mid, g;

		if (lo >= hi)
			break;
		mid = lo + (hi - lo) / 2;
		g = read_u32(gi, OFF_GROUP_INFO_GID + (u64)mid * 4);
		if (g == gid)
			return 1;
		if (gid > g)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

@GENERATED@

/* audit's return_code: the kernel-internal restart codes are written as -EINTR */
static __always_inline s64 audit_return(s64 ret)
{
	if (ret <= -512 && ret >= -516 && ret != -515)
		return -4;
	return ret;
}

static __always_inline void judge(void *ctx, struct syscall_event *ev, int returned)
{
	void *task = (void *)bpf_get_current_task();
	struct exe_id exe = {};
	s64 ret = 0;
	u32 valid = 0;          /* AUDITSC_SUCCESS 1, AUDITSC_FAILURE 2, 0: no result */
	int rule;

	if (returned) {
		ret = audit_return(ev->ret);
		valid = (ev->ret >= -4095 && ev->ret <= -1) ? 2 : 1;   /* IS_ERR_VALUE */
	}
	capture_identity(&ev->id, task);
#ifdef RULES_NEED_EXE
	exe_identity(&exe, task);
#endif
	rule = rules_match(ev->nr, ev->args, &ev->id, ret, valid, &exe);
	if (rule <= 0)
		return;
	ev->ret = ret;
	ev->extra.rule = rule;
	ev->extra.returned = returned;
	capture_proctitle(&ev->title, task);
	capture_exe(&ev->exe, task);
	submit(ctx, ev);
}

static __always_inline int rules_on_enter(void *ctx, s32 nr, const u64 *args)
{
	u64 a[6] = {};
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	u32 zero = 0;
	struct syscall_event *ev;

	/* one copy: the verifier allows no variable offsets into the context */
	bpf_probe_read_kernel(a, sizeof(a), args);
#ifdef TRACE_TREE
	{
		u32 tgid = pid_tgid >> 32;

		if (!traced.lookup(&tgid))
			return 0;
	}
#endif
#ifdef COMPAT_OFF
	if (read_u32((void *)bpf_get_current_task(), COMPAT_OFF) & COMPAT_MASK)
		return 0;
#endif
	if (!rules_enter(nr, a))
		return 0;
	ev = scratch.lookup(&zero);
	if (!ev)
		return 0;
	ev->ktime = now();
	ev->kind = EV_SYSCALL;
	ev->tid = tid;
	ev->nr = nr;
	ev->ret = 0;
	capture_args(ev->args, a, nr, syscall_nargs(nr));
	ev->extra.rule = 0;
	ev->extra.returned = 1;
	if (nr == NR_EXIT || nr == NR_EXIT_GROUP) {
		judge(ctx, ev, 0);
		return 0;
	}
	if (inflight.update(&tid, ev) != 0)
		drops.increment(0);
	return 0;
}

static __always_inline int rules_on_exit(void *ctx, s64 ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct syscall_event *ev = inflight.lookup(&tid);

	if (!ev)
		return 0;
	ev->ret = ret;
	judge(ctx, ev, 1);
	inflight.delete(&tid);
	return 0;
}

int on_sys_enter(struct sys_enter_ctx *ctx)
{
	return rules_on_enter(ctx, ctx->nr, ctx->args);
}

int on_sys_exit(struct sys_exit_ctx *ctx)
{
	return rules_on_exit(ctx, ctx->ret);
}

#ifdef RAW_SYSCALLS
/* raw_syscalls records share the syscalls:* layout: the number (a long, read as its low
 * half) at offset 8, then the arguments or the result */
TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
	return rules_on_enter(args, (s32)args->id, (const u64 *)args->args);
}

TRACEPOINT_PROBE(raw_syscalls, sys_exit)
{
	return rules_on_exit(args, args->ret);
}
#endif

#ifdef TRACE_TREE
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	void *parent = (void *)ctx->args[0];
	void *child = (void *)ctx->args[1];
	u32 ptgid = read_u32(parent, OFF_TASK_TGID);
	u32 ctgid;
	u8 one = 1;

	if (!traced.lookup(&ptgid))
		return 0;
	ctgid = read_u32(child, OFF_TASK_TGID);
	traced.update(&ctgid, &one);
	return 0;
}
#endif
