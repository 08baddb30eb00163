/* Who sends which signal to whom.
 *
 * The signal syscalls (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
 * pidfd_send_signal) go through syscall_programs.h: filtered on the signal (SIG_MASK) and
 * the sender before anything is captured, parked per thread, submitted at exit.
 * raw tracepoint signal_generate: while a parked syscall runs, each target is added (what
 * audit's OBJ_PID says); with no parked syscall the kernel generated the signal itself
 * (fault, SIGPIPE, OOM killer, timer, tty): reported as its own event when KERNEL_SIGNALS.
 * A send that generated nothing (refused, signal 0) finds its target by number at exit.
 */
#include "pid.h"
#include "task.h"

#define MAX_TARGETS 8
#define EV_KERNEL_SIGNAL 2

struct family_extra {
	s32 sig;
	s32 si_code;            /* kernel signals */
	s32 result;             /* kernel signals: TRACE_SIGNAL_* */
	u32 group;
	u32 ntargets;           /* may exceed MAX_TARGETS: the rest are counted, not kept */
	u32 pad;
	struct target targets[MAX_TARGETS];
};
/* sent up to the targets kept */
#define FAMILY_EXTRA_LEN(ev) (__builtin_offsetof(struct family_extra, targets) + \
	((ev)->extra.ntargets < MAX_TARGETS ? (ev)->extra.ntargets : MAX_TARGETS) * \
	sizeof(struct target))

#include "syscall_event.h"

BPF_HASH(filter_tpid, u32, u8, 64);
BPF_HASH(filter_tcomm, struct comm_key, u8, 64);

static __always_inline int signal_arg(int nr)
{
	if (nr == NR_KILL || nr == NR_TKILL || nr == NR_RT_SIGQUEUEINFO ||
	    nr == NR_PIDFD_SEND_SIGNAL)
		return 1;
	if (nr == NR_TGKILL || nr == NR_RT_TGSIGQUEUEINFO)
		return 2;
	return -1;
}

static __always_inline int signal_wanted(s64 sig)
{
	if (sig < 0 || sig > 64)
		return 0;
	if (sig == 64)
		return SIG_64_WANTED;
	return (SIG_MASK >> sig) & 1;
}

static __always_inline s32 signal_of(const struct syscall_event *ev)
{
	return signal_arg(ev->nr) == 1 ? (s32)ev->args[1] : (s32)ev->args[2];
}

/* The pid a syscall names as its target, when it names one (not pidfd_send_signal). */
static __always_inline s32 target_arg(const struct syscall_event *ev)
{
	if (ev->nr == NR_TGKILL || ev->nr == NR_RT_TGSIGQUEUEINFO)
		return (s32)ev->args[1];
	if (ev->nr == NR_PIDFD_SEND_SIGNAL)
		return 0;
	return (s32)ev->args[0];
}

static __always_inline int targets_wanted(const struct syscall_event *ev)
{
	const struct family_extra *x = &ev->extra;
	u32 n = x->ntargets < MAX_TARGETS ? x->ntargets : MAX_TARGETS;
	int pid_ok = !FILTER_TPID, comm_ok = !FILTER_TCOMM;

	if (n == 0) {
		/* nothing generated (refused, sig 0): judge by the pid the syscall named */
		u32 pid = target_arg(ev);

		if (FILTER_TPID && filter_tpid.lookup(&pid))
			pid_ok = 1;
		return pid_ok && !FILTER_TCOMM;
	}
#pragma unroll
	for (int i = 0; i < MAX_TARGETS; i++) {
		if (i >= n)
			break;
		if (FILTER_TPID && filter_tpid.lookup((u32 *)&x->targets[i].pid))
			pid_ok = 1;
		if (FILTER_TCOMM && filter_tcomm.lookup((struct comm_key *)x->targets[i].comm))
			comm_ok = 1;
	}
	return pid_ok && comm_ok;
}

/* the signal argument only: kill's record holds two arguments, so a1 is a plain load and
 * a2 (tgkill, rt_tgsigqueueinfo) a copy made for those two alone */
static __always_inline int family_want(int nr, const struct sc_call *c)
{
	int arg = signal_arg(nr);

	if (arg < 0)
		return 0;
	return signal_wanted((s32)(arg == 1 ? call_arg(c, 1) : call_arg(c, 2)));
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	ev->extra.sig = signal_of(ev);
	ev->extra.si_code = 0;
	/* the caller's siginfo: a code >= 0 or SI_TKILL is refused before any lookup */
	if (ev->nr == NR_RT_SIGQUEUEINFO)
		bpf_probe_read_user(&ev->extra.si_code, 4, (void *)ev->args[2] + OFF_SIGINFO_CODE);
	else if (ev->nr == NR_RT_TGSIGQUEUEINFO)
		bpf_probe_read_user(&ev->extra.si_code, 4, (void *)ev->args[3] + OFF_SIGINFO_CODE);
	ev->extra.result = 0;
	ev->extra.group = 0;
	ev->extra.ntargets = 0;
	return 1;
}

/* errno values and siginfo codes are user ABI; our names, as the header tree may define
 * them */
#define ERR_PERM 1
#define ERR_SRCH 3
#define ERR_FAULT 14
#define ERR_INVAL 22
#define CODE_USER 0             /* SI_USER: kill() */
#define CODE_KERNEL 0x80        /* SI_KERNEL */
#define CODE_QUEUE (-1)         /* SI_QUEUE: sigqueue() */
#define CODE_TKILL (-6)         /* SI_TKILL: tkill(), tgkill() */

/* No signal generated: did the kernel get as far as its permission check on a target
 * (audit_signal_info, where audit takes OBJ_PID)? Not when the target was not found or
 * the arguments were refused first. */
static __always_inline int target_checked(const struct syscall_event *ev)
{
	s32 code = ev->extra.si_code;

	if (ev->ret == -ERR_SRCH || ev->ret == -ERR_INVAL || ev->ret == -ERR_FAULT)
		return 0;
	if ((ev->nr == NR_RT_SIGQUEUEINFO || ev->nr == NR_RT_TGSIGQUEUEINFO) &&
	    ev->ret == -ERR_PERM && (code >= 0 || code == CODE_TKILL) && target_arg(ev) != ev->tid)
		return 0;
	return 1;
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	s32 pid = target_arg(ev);

	/* still alive while the caller is in the syscall: named now, not read later */
	if (ev->extra.ntargets == 0 && pid > 0 && target_checked(ev)) {
		void *task = task_by_vpid(pid);

		if (task) {
			capture_target(&ev->extra.targets[0], task);
			ev->extra.ntargets = 1;
		}
	}
	return targets_wanted(ev);
}

#include "syscall_programs.h"

RAW_TRACEPOINT_PROBE(signal_generate)
{
	s32 sig = (s32)ctx->args[0];
	void *info = (void *)ctx->args[1];
	void *victim = (void *)ctx->args[2];
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct syscall_event *ev = none_parked() ? 0 : inflight.lookup(&tid);
	s32 code = 0;

	if (ev) {
		u32 n = ev->extra.ntargets;

		if (sig != ev->extra.sig)
			return 0;
		if (n < MAX_TARGETS)
			capture_target(&ev->extra.targets[n & (MAX_TARGETS - 1)], victim);
		ev->extra.ntargets = n + 1;
		return 0;
	}
	if (!KERNEL_SIGNALS || !signal_wanted(sig))
		return 0;
	/* SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1) are the kernel's own sends */
	if ((unsigned long)info > 1)
		READ_KERNEL(code, info, OFF_SIGINFO_CODE);
	else
		code = (unsigned long)info ? CODE_KERNEL : CODE_USER;
	/* a user-space send (SI_USER, SI_TKILL, SI_QUEUE) outside any parked syscall was
	 * filtered out at sys_enter: it is not the kernel's */
	if ((unsigned long)info > 1 &&
	    (code == CODE_USER || code == CODE_TKILL || code == CODE_QUEUE))
		return 0;
	ev = capture_current();
	if (!ev)
		return 0;
	ev->kind = EV_KERNEL_SIGNAL;
	ev->nr = -1;
	ev->ret = 0;
	ev->args[0] = ev->args[1] = ev->args[2] = ev->args[3] = 0;
	ev->extra.sig = sig;
	ev->extra.si_code = code;
	ev->extra.group = (u32)ctx->args[3];
	ev->extra.result = (s32)ctx->args[4];
	ev->extra.ntargets = 1;
	capture_target(&ev->extra.targets[0], victim);
	if (targets_wanted(ev))
		submit(ctx, ev);
	return 0;
}
