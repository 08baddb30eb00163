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
 * Hooked as every family is (syscall_hooks.h). On raw tracepoints 32-bit (compat) calls come
 * through too, with their own numbers and argument registers: with RULES_COMPAT the rules
 * test the ABI themselves (`-F arch=b32`, or no -F arch: the same numbers in both), else
 * they are skipped here and 32-bit rules run in kernel audit.
 * TRACE_TREE: only the tasks of the traced process tree (`audtrace trace`); a fork of a
 * traced process adds the child, in the kernel, before the child can run.
 */
struct family_extra {
	u32 rule;               /* the deciding rule's number (1-based) in user space's table */
	u32 returned;           /* 0 for exit/exit_group: no result */
	u32 compat;             /* a 32-bit call: numbers and arguments of the 32-bit ABI */
	u32 pad;
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

/* exit/exit_group of the 32-bit table: user space defines them with RULES_COMPAT */
#ifndef NR32_EXIT
#define NR32_EXIT -1
#define NR32_EXIT_GROUP -1
#endif

/* argument i (a constant) for the rules' tests at entry: rules_enter() reads one only where
 * a rule's syscall test passed, so a call no rule wants costs no read */
static __always_inline u64 rule_arg(const struct sc_call *c, u32 compat, const int i)
{
	return compat ? compat_arg(c, i) : call_arg(c, i);
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
	rule = rules_match(ev->nr, ev->extra.compat, ev->args, &ev->id, ret, valid, &exe);
	if (rule <= 0)
		return;
	ev->ret = ret;
	ev->extra.rule = rule;
	ev->extra.returned = returned;
	capture_proctitle(&ev->title, task);
	capture_exe(&ev->exe, task);
	submit(ctx, ev);
}

static __always_inline int no_return(s32 nr, u32 compat)
{
	if (compat)
		return nr == NR32_EXIT || nr == NR32_EXIT_GROUP;
	return nr == NR_EXIT || nr == NR_EXIT_GROUP;
}

/* A call no rule wants costs the number and argument tests only: no helper call before
 * them (the compat state is read first only where 32-bit rules need it to pick registers) */
static __always_inline int call_enter(void *ctx, const struct sc_call *c)
{
	u32 zero = 0, compat = 0;
	s32 nr = c->nr;
	struct syscall_event *ev;

#ifdef TRACE_TREE
	{
		u32 tgid = bpf_get_current_pid_tgid() >> 32;

		if (!traced.lookup(&tgid))
			return 0;
	}
#endif
#ifdef RULES_COMPAT
	compat = call_compat(c);
	if (!rules_enter(nr, compat, c))
		return 0;
#else
	if (!rules_enter(nr, 0, c) || call_compat(c))
		return 0;
#endif
	ev = scratch.lookup(&zero);
	if (!ev)
		return 0;
	ev->ktime = now();
	ev->kind = EV_SYSCALL;
	ev->tid = (u32)bpf_get_current_pid_tgid();
	ev->nr = nr;
	ev->ret = 0;
	call_capture_args(ev->args, c, compat);
	ev->extra.rule = 0;
	ev->extra.returned = 1;
	ev->extra.compat = compat;
	if (no_return(nr, compat)) {
		judge(ctx, ev, 0);
		return 0;
	}
	park(ev);
	return 0;
}

static __always_inline int call_exit(void *ctx, s64 ret)
{
	u32 tid;
	struct syscall_event *ev = parked_call(&tid);

	if (!ev)
		return 0;
	ev->ret = ret;
	judge(ctx, ev, 1);
	unpark(tid);
	return 0;
}

#include "syscall_hooks.h"

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
