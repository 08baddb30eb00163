/* Who sends which signal to whom.
 *
 * sys_enter_{kill,tkill,tgkill,rt_sigqueueinfo,rt_tgsigqueueinfo,pidfd_send_signal}:
 *     filter on the signal and the sender, capture the sender's identity (the sender may be
 *     gone before user space looks, /bin/kill is), park it per thread.
 * raw tracepoint signal_generate: while a parked syscall runs, add each target (OBJ_PID);
 *     with no parked syscall, the kernel generated the signal itself (fault, SIGPIPE, OOM
 *     killer, timer, tty): report it when KERNEL_SIGNALS is set.
 * sys_exit: add the return value and submit one event.
 *
 * Constants come from user space (tracer/probes.py): syscall numbers NR_*, the signal set
 * SIG_MASK, filter switches FILTER_*, struct offsets OFF_*.
 */
#include "identity.h"

#define MAX_TARGETS 8
#define EV_SYSCALL 1
#define EV_KERNEL_SIGNAL 2

struct signal_event {
	u64 ktime;
	u32 kind;
	s32 nr;
	s64 ret;
	u64 args[4];
	s32 sig;
	s32 si_code;
	s32 result;
	u32 group;
	u32 ntargets;   /* may exceed MAX_TARGETS: the rest are counted, not kept */
	u32 pad;
	struct target targets[MAX_TARGETS];
	struct identity id;
	struct proctitle title;
	struct exe_path exe;
};

BPF_HASH(inflight, u32, struct signal_event, 4096);
BPF_PERCPU_ARRAY(scratch, struct signal_event, 1);
BPF_PERF_OUTPUT(events);
/* events lost, counted here where they are lost: [0] in-flight table full, [1] perf buffer
 * full. (The perf buffer's own lost records arrive only once it has room again, so the
 * last burst's losses could stay unreported.) */
BPF_ARRAY(drops, u64, 2);

static __always_inline void submit(void *ctx, struct signal_event *ev)
{
	if (events.perf_submit(ctx, ev, sizeof(*ev)) != 0)
		drops.increment(1);
}

BPF_HASH(filter_pid, u32, u8, 64);
BPF_HASH(filter_uid, u32, u8, 64);
BPF_HASH(filter_comm, struct comm_key, u8, 64);
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

/* The pid a syscall names as its target, when it names one (not pidfd_send_signal). */
static __always_inline s64 target_arg(const struct signal_event *ev)
{
	if (ev->nr == NR_TGKILL || ev->nr == NR_RT_TGSIGQUEUEINFO)
		return (s32)ev->args[1];
	if (ev->nr == NR_PIDFD_SEND_SIGNAL)
		return 0;
	return (s32)ev->args[0];
}

static __always_inline int nargs_of(int nr)
{
	if (nr == NR_KILL || nr == NR_TKILL)
		return 2;
	if (nr == NR_TGKILL || nr == NR_RT_SIGQUEUEINFO)
		return 3;
	return 4;
}

static __always_inline int signal_wanted(s64 sig)
{
	if (sig < 0 || sig > 64)
		return 0;
	if (sig == 64)
		return SIG_64_WANTED;
	return (SIG_MASK >> sig) & 1;
}

static __always_inline int sender_wanted(const struct identity *id)
{
	if (FILTER_PID && !filter_pid.lookup((u32 *)&id->pid))
		return 0;
	if (FILTER_UID && !filter_uid.lookup((u32 *)&id->uid))
		return 0;
	if (FILTER_COMM && !filter_comm.lookup((struct comm_key *)id->comm))
		return 0;
	return 1;
}

static __always_inline int targets_wanted(const struct signal_event *ev)
{
	u32 n = ev->ntargets < MAX_TARGETS ? ev->ntargets : MAX_TARGETS;
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
		if (FILTER_TPID && filter_tpid.lookup((u32 *)&ev->targets[i].pid))
			pid_ok = 1;
		if (FILTER_TCOMM && filter_tcomm.lookup((struct comm_key *)ev->targets[i].comm))
			comm_ok = 1;
	}
	return pid_ok && comm_ok;
}

/* CLOCK_MONOTONIC; user space adds the offset to CLOCK_REALTIME. (Audit stamps with the
 * coarse clock, which tracepoint programs cannot read: audit's stamp may be a tick earlier.) */
static __always_inline u64 now(void)
{
	return bpf_ktime_get_ns();
}

int on_sys_enter(struct sys_enter_ctx *ctx)
{
	int idx = signal_arg(ctx->nr);
	u32 zero = 0;
	struct signal_event *ev;
	void *task;

	u64 a[4] = {};
	s32 sig;

	if (idx < 0)
		return 0;
	/* one copy: the verifier allows no variable offsets into the context */
	bpf_probe_read_kernel(a, sizeof(a), ctx->args);
	sig = idx == 1 ? (s32)a[1] : (s32)a[2];
	if (!signal_wanted(sig))
		return 0;
	ev = scratch.lookup(&zero);
	if (!ev)
		return 0;
	task = (void *)bpf_get_current_task();
	capture_identity(&ev->id, task);
	if (!sender_wanted(&ev->id))
		return 0;
	ev->ktime = now();
	ev->kind = EV_SYSCALL;
	ev->nr = ctx->nr;
	ev->ret = 0;
	capture_args(ev->args, a, ctx->nr, nargs_of(ctx->nr));
	ev->sig = sig;
	ev->si_code = 0;
	ev->result = 0;
	ev->group = 0;
	ev->ntargets = 0;
	capture_proctitle(&ev->title, task);
	capture_exe(&ev->exe, task);
	if (inflight.update(&ev->id.tid, ev) != 0)
		drops.increment(0);
	return 0;
}

RAW_TRACEPOINT_PROBE(signal_generate)
{
	s32 sig = (s32)ctx->args[0];
	void *info = (void *)ctx->args[1];
	void *victim = (void *)ctx->args[2];
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct signal_event *ev = inflight.lookup(&tid);
	s32 code = 0;
	u32 zero = 0;

	if (ev) {
		u32 n = ev->ntargets;

		if (sig != ev->sig)
			return 0;
		if (n < MAX_TARGETS)
			capture_target(&ev->targets[n & (MAX_TARGETS - 1)], victim);
		ev->ntargets = n + 1;
		return 0;
	}
	if (!KERNEL_SIGNALS || !signal_wanted(sig))
		return 0;
	/* SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1) are the kernel's own sends */
	if ((unsigned long)info > 1)
		READ_KERNEL(code, info, OFF_SIGINFO_CODE);
	else
		code = (unsigned long)info ? 0x80 /* SI_KERNEL */ : 0 /* SI_USER */;
	/* a user-space send (kill, tkill, sigqueue) outside any parked syscall was filtered out
	 * at sys_enter: it is not the kernel's */
	if ((unsigned long)info > 1 && (code == 0 || code == -6 || code == -1))
		return 0;
	ev = scratch.lookup(&zero);
	if (!ev)
		return 0;
	capture_identity(&ev->id, (void *)bpf_get_current_task());
	if (!sender_wanted(&ev->id))
		return 0;
	ev->ktime = now();
	ev->kind = EV_KERNEL_SIGNAL;
	ev->nr = -1;
	ev->ret = 0;
	ev->args[0] = ev->args[1] = ev->args[2] = ev->args[3] = 0;
	ev->sig = sig;
	ev->si_code = code;
	ev->group = (u32)ctx->args[3];
	ev->result = (s32)ctx->args[4];
	ev->ntargets = 1;
	capture_target(&ev->targets[0], victim);
	if (!targets_wanted(ev))
		return 0;
	capture_proctitle(&ev->title, (void *)bpf_get_current_task());
	capture_exe(&ev->exe, (void *)bpf_get_current_task());
	submit(ctx, ev);
	return 0;
}

int on_sys_exit(struct sys_exit_ctx *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct signal_event *ev = inflight.lookup(&tid);

	if (!ev)
		return 0;
	ev->ret = ctx->ret;
	if (targets_wanted(ev))
		submit(ctx, ev);
	inflight.delete(&tid);
	return 0;
}
