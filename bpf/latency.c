/* Syscall and kernel-function latency, aggregated in the kernel.
 *
 * sys_enter stamps the thread; sys_exit computes the delta and bumps a log2 bucket
 * (slot = bit length of the nanoseconds: slot k >= 1 holds [2^(k-1), 2^k)) plus exact
 * count/sum/min/max, in per-CPU hashes keyed by syscall (and process with PER_PROCESS).
 * Nothing crosses to user space per call, except calls slower than SLOWER_THAN_NS: those
 * become a syscall_event (identity captured at entry) with the latency, sent as any event.
 *
 * exit and exit_group never return: their latency ends at the task's last context switch
 * (raw tracepoint sched_switch once exit_state is set), attached only when they are traced.
 *
 * Interval reports without racing the counters: two sets of maps, chosen by the parity of
 * epoch[0]. User space flips the epoch, waits a grace period far longer than any of these
 * programs runs (they read the epoch and update within microseconds), then drains the set
 * no program writes any more with lookup-and-delete.
 *
 * Kernel functions (FUNC_FENTRY or FUNC_KPROBE, FUNC_NAME): the same aggregation with
 * key nr = FUNC_NR, from fentry/fexit or kprobe/kretprobe.
 */
struct family_extra {
	u64 latency_ns;
};

#include "syscall_event.h"

#define FUNC_NR -1

struct hist_key {
	s32 nr;
	u32 tgid;               /* 0 unless PER_PROCESS */
	u32 slot;
	u32 pad;
};

struct stats_key {
	s32 nr;
	u32 tgid;
};

struct stats {
	u64 count, sum, min, max;
};

struct exit_stamp {
	u64 ts;
	s32 nr;
	u32 pad;
};

BPF_ARRAY(epoch, u32, 1);
BPF_PERCPU_HASH(hist0, struct hist_key, u64, HIST_ENTRIES);
BPF_PERCPU_HASH(hist1, struct hist_key, u64, HIST_ENTRIES);
BPF_PERCPU_HASH(stats0, struct stats_key, struct stats, STATS_ENTRIES);
BPF_PERCPU_HASH(stats1, struct stats_key, struct stats, STATS_ENTRIES);
/* tid -> entry stamp; LRU so a thread that never comes back cannot fill it */
BPF_TABLE("lru_hash", u32, u64, start, 16384);
BPF_TABLE("lru_hash", u32, struct exit_stamp, exiting, 4096);
/* tgid -> comm, for --per-process reports of processes gone by then */
BPF_HASH(comms, u32, struct comm_key, STATS_ENTRIES);
/* [0] aggregation map full */
BPF_ARRAY(agg_lost, u64, 1);

static __always_inline u32 bit_length(u64 v)
{
	u32 n = 0;

	if (v >> 32) { v >>= 32; n += 32; }
	if (v >> 16) { v >>= 16; n += 16; }
	if (v >> 8) { v >>= 8; n += 8; }
	if (v >> 4) { v >>= 4; n += 4; }
	if (v >> 2) { v >>= 2; n += 2; }
	if (v >> 1) { v >>= 1; n += 1; }
	return n + (u32)v;
}

/* cheap filters, before anything is captured: no identity walk for unwanted calls */
static __always_inline int wanted(u64 pid_tgid)
{
	u32 tgid = pid_tgid >> 32;

	if (tgid == SELF_TGID)
		return 0;
	if (FILTER_PID && !filter_pid.lookup(&tgid))
		return 0;
	if (FILTER_COMM) {
		struct comm_key k = {};

		bpf_get_current_comm(k.comm, sizeof(k.comm));
		if (!filter_comm.lookup(&k))
			return 0;
	}
	return 1;
}

static __always_inline void stats_add(struct stats *s, u64 delta)
{
	s->count++;
	s->sum += delta;
	if (s->count == 1 || delta < s->min)
		s->min = delta;
	if (delta > s->max)
		s->max = delta;
}

static __always_inline void record(s32 nr, u32 tgid, u64 delta)
{
	u32 zero = 0;
	u32 *e = epoch.lookup(&zero);
	struct hist_key hk = {};
	struct stats_key sk = {};
	struct stats init = {};
	struct stats *s;
	u64 one = 1, *c;

	hk.nr = sk.nr = nr;
	hk.tgid = sk.tgid = PER_PROCESS ? tgid : 0;
	hk.slot = bit_length(delta);
	/* the same code twice: BCC rewrites map calls by the map's name */
	if (e && (*e & 1)) {
		c = hist1.lookup(&hk);
		if (c)
			(*c)++;
		else if (hist1.update(&hk, &one) != 0)
			agg_lost.increment(0);
		s = stats1.lookup_or_try_init(&sk, &init);
	} else {
		c = hist0.lookup(&hk);
		if (c)
			(*c)++;
		else if (hist0.update(&hk, &one) != 0)
			agg_lost.increment(0);
		s = stats0.lookup_or_try_init(&sk, &init);
	}
	if (s)
		stats_add(s, delta);
	else
		agg_lost.increment(0);
	if (PER_PROCESS && !comms.lookup(&tgid)) {
		struct comm_key k = {};

		bpf_get_current_comm(k.comm, sizeof(k.comm));
		comms.update(&tgid, &k);
	}
}

/* A slow call's parked event goes out with its latency; the others are dropped. */
static __always_inline void finish_event(void *ctx, u32 tid, s64 ret, u64 delta)
{
#if SLOWER_THAN_NS
	struct syscall_event *ev = inflight.lookup(&tid);

	if (!ev)
		return;
	if (delta >= SLOWER_THAN_NS) {
		ev->ret = ret;
		ev->extra.latency_ns = delta;
		submit(ctx, ev);
	}
	inflight.delete(&tid);
#endif
}

static __always_inline int is_exit(int nr)
{
	return nr == LAT_NR_EXIT || nr == LAT_NR_EXIT_GROUP;
}

int on_sys_enter(struct sys_enter_ctx *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	int nr = ctx->nr;
	u64 ts;

	if (!wanted(pid_tgid))
		return 0;
#if SLOWER_THAN_NS
	{
		u64 a[6] = {};
		struct syscall_event *ev;

		bpf_probe_read_kernel(a, sizeof(a), ctx->args);
		ev = capture_current();
		if (ev) {
			ev->kind = EV_SYSCALL;
			ev->nr = nr;
			ev->ret = 0;
			ev->extra.latency_ns = 0;
			capture_args(ev->args, a, nr, syscall_nargs(nr));
			if (inflight.update(&tid, ev) != 0)
				drops.increment(0);
		}
	}
#endif
	/* stamped last, so the capture above is not part of the latency */
	ts = now();
	if (is_exit(nr)) {
		struct exit_stamp x = {};

		x.ts = ts;
		x.nr = nr;
		exiting.update(&tid, &x);
		return 0;
	}
	start.update(&tid, &ts);
	return 0;
}

/* The time since this thread's stamp in `start`, which is consumed; 0: it had none. */
static __always_inline int took(u32 tid, u64 t, u64 *delta)
{
	u64 *ts = start.lookup(&tid);

	if (!ts)
		return 0;
	*delta = t - *ts;
	start.delete(&tid);
	return 1;
}

int on_sys_exit(struct sys_exit_ctx *ctx)
{
	u64 t = now();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	u64 delta;

	if (!took(tid, t, &delta))
		return 0;
	record(ctx->nr, pid_tgid >> 32, delta);
	finish_event(ctx, tid, ctx->ret, delta);
	return 0;
}

/* raw tracepoint sched_switch, still in the context of the task switched away from: once
 * exit_state is set (zombie or dead) and the switch is no preemption, it is the last one */
int on_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
	u64 t = now();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct exit_stamp *x = exiting.lookup(&tid);
	u64 delta;
	s32 nr;

	if (!x || ctx->args[0] /* preempted */)
		return 0;
	if (!read_u32((void *)bpf_get_current_task(), OFF_TASK_EXIT_STATE))
		return 0;
	delta = t - x->ts;
	nr = x->nr;
	exiting.delete(&tid);
	record(nr, pid_tgid >> 32, delta);
	finish_event(ctx, tid, 0, delta);
	return 0;
}

#if defined(FUNC_FENTRY) || defined(FUNC_KPROBE)
static __always_inline int func_enter(void)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	u64 ts;

	if (!wanted(pid_tgid))
		return 0;
	ts = now();
	start.update(&tid, &ts);
	return 0;
}

static __always_inline int func_exit(void)
{
	u64 t = now();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 delta;

	if (took((u32)pid_tgid, t, &delta))
		record(FUNC_NR, pid_tgid >> 32, delta);
	return 0;
}
#endif

#ifdef FUNC_FENTRY
/* two levels, so FUNC_NAME is expanded before KFUNC_PROBE pastes it into a name */
#define LAT_FENTRY(f) KFUNC_PROBE(f)
#define LAT_FEXIT(f) KRETFUNC_PROBE(f)

LAT_FENTRY(FUNC_NAME)
{
	return func_enter();
}

LAT_FEXIT(FUNC_NAME)
{
	return func_exit();
}
#endif

#ifdef FUNC_KPROBE
int func_kprobe(struct pt_regs *ctx)
{
	return func_enter();
}

int func_kretprobe(struct pt_regs *ctx)
{
	return func_exit();
}
#endif
