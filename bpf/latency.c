/* Syscall and kernel-function latency, aggregated in the kernel.
 *
 * Entry stamps the thread; exit computes the delta and bumps a log2 bucket (slot = bit length
 * of the nanoseconds: slot k >= 1 holds [2^(k-1), 2^k)) plus exact count/sum/min/max.
 * Nothing crosses to user space per call, except calls slower than SLOWER_THAN_NS: those
 * become a syscall_event (identity captured at entry) with the latency, sent as any event.
 *
 * What user space chooses (tracer/subcommands/latency.py), each for its cost per timed call:
 *   LAT_RAW            raw tracepoints sys_enter/sys_exit: every syscall runs the programs,
 *                      which test the number first (timed_index, generated); else the timed
 *                      syscalls' own tracepoints (syscalls:sys_enter_X / sys_exit_X)
 *   LAT_BTF            (with LAT_RAW, its fallback) the same as tp_btf programs, which read
 *                      the registers and the task with plain loads instead of helper calls
 *   HAVE_TASK_STORAGE  the stamp in task-local storage (no hash update, lookup and delete per
 *                      call; it goes with the task), else a per-thread LRU hash
 *   LAT_ARRAYS         counters in per-CPU arrays indexed by (timed index, bucket): lookups
 *                      without hashing, where the keys are bounded (no PER_PROCESS); else
 *                      per-CPU hashes keyed by syscall, process and bucket
 *
 * exit and exit_group never return: their latency ends at the task's last context switch
 * (raw tracepoint sched_switch once exit_state is set), attached only when they are timed.
 *
 * Interval reports without racing the counters: two sets of counters, chosen by the parity
 * of epoch[0]. User space flips the epoch, waits a grace period far longer than any of these
 * programs runs (they read the epoch and update within microseconds), then drains the set
 * no program writes any more. With arrays a set is one half of each array.
 *
 * Kernel functions (FUNC_FENTRY or FUNC_KPROBE, FUNC_NAME): the same aggregation at timed
 * index 0, key nr = FUNC_NR, from fentry/fexit or kprobe/kretprobe.
 */
struct family_extra {
	u64 latency_ns;
};

#include "syscall_event.h"

#define FUNC_NR -1
#define BUCKETS 64              /* log2 slots per timed index (2^63 ns is 292 years) */

/* What a thread's entry left for its exit. */
struct stamp {
	u64 ts;                 /* 0: nothing pending */
	s32 nr;
	s32 index;              /* timed index */
};

struct stats {
	u64 count, sum, min, max;
};

BPF_ARRAY(epoch, u32, 1);
/* not counted: [0] aggregation map full, [1] no room for a start stamp */
BPF_ARRAY(agg_lost, u64, 2);

@GENERATED@

#ifdef HAVE_TASK_STORAGE
BPF_TASK_STORAGE(start, struct stamp);

/* The calling thread's pending stamp, or 0. */
static __always_inline struct stamp *stamp_of(u32 tid)
{
	return start.task_storage_get(bpf_get_current_task_btf(), 0, 0);
}

static __always_inline void stamp_set(u32 tid, s32 nr, s32 index)
{
	/* made at the thread's first timed call, gone with the thread */
	struct stamp *s = start.task_storage_get(bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!s) {
		agg_lost.increment(1);
		return;
	}
	s->nr = nr;
	s->index = index;
	s->ts = now();          /* last: what came before is not part of the latency */
}

static __always_inline void stamp_done(u32 tid, struct stamp *s)
{
	s->ts = 0;
}
#else
/* tid -> stamp; LRU so a thread that never comes back cannot fill it */
BPF_TABLE("lru_hash", u32, struct stamp, start, 16384);

static __always_inline struct stamp *stamp_of(u32 tid)
{
	return start.lookup(&tid);
}

static __always_inline void stamp_set(u32 tid, s32 nr, s32 index)
{
	struct stamp s = {};

	s.nr = nr;
	s.index = index;
	s.ts = now();
	if (start.update(&tid, &s) != 0)
		agg_lost.increment(1);
}

static __always_inline void stamp_done(u32 tid, struct stamp *s)
{
	start.delete(&tid);
}
#endif

#ifdef LAT_ARRAYS
/* [parity][index][bucket] and [parity][index] */
BPF_PERCPU_ARRAY(hist, u64, 2 * LAT_INDEXES * BUCKETS);
BPF_PERCPU_ARRAY(stats, struct stats, 2 * LAT_INDEXES);
#else
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

BPF_PERCPU_HASH(hist0, struct hist_key, u64, HIST_ENTRIES);
BPF_PERCPU_HASH(hist1, struct hist_key, u64, HIST_ENTRIES);
BPF_PERCPU_HASH(stats0, struct stats_key, struct stats, STATS_ENTRIES);
BPF_PERCPU_HASH(stats1, struct stats_key, struct stats, STATS_ENTRIES);
/* tgid -> comm, for --per-process reports of processes gone by then */
BPF_HASH(comms, u32, struct comm_key, STATS_ENTRIES);
#endif

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

static __always_inline u32 parity(void)
{
	u32 zero = 0;
	u32 *e = epoch.lookup(&zero);

	return e ? (*e & 1) : 0;
}

#ifdef LAT_ARRAYS
static __always_inline void record(s32 index, s32 nr, u32 tgid, u64 delta)
{
	u32 set = parity(), slot = bit_length(delta);
	u32 h, s;
	struct stats *st;
	u64 *c;

	if (slot >= BUCKETS)
		slot = BUCKETS - 1;
	s = set * LAT_INDEXES + (u32)index;
	h = s * BUCKETS + slot;
	c = hist.lookup(&h);
	st = stats.lookup(&s);
	if (!c || !st) {
		agg_lost.increment(0);
		return;
	}
	(*c)++;
	stats_add(st, delta);
}
#else
static __always_inline void record(s32 index, s32 nr, u32 tgid, u64 delta)
{
	struct hist_key hk = {};
	struct stats_key sk = {};
	struct stats init = {};
	struct stats *s;
	u64 one = 1, *c;

	hk.nr = sk.nr = nr;
	hk.tgid = sk.tgid = PER_PROCESS ? tgid : 0;
	hk.slot = bit_length(delta);
	/* the same code twice: BCC rewrites map calls by the map's name */
	if (parity()) {
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
#endif

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

/* With --slower-than: who calls, parked until the exit says how long it took. */
static __always_inline void park_event(u32 tid, s32 nr, const u64 *a, int nargs)
{
#if SLOWER_THAN_NS
	struct syscall_event *ev = capture_current();

	if (!ev)
		return;
	ev->kind = EV_SYSCALL;
	ev->nr = nr;
	ev->ret = 0;
	ev->extra.latency_ns = 0;
	capture_args(ev->args, a, nr, nargs);
	if (inflight.update(&tid, ev) != 0)
		drops.increment(0);
#endif
}

/* The timed call `nr` (timed index `index`) begins on this thread; `a`: its arguments. */
static __always_inline int lat_enter(s32 nr, s32 index, const u64 *a, int nargs)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;

	if (!wanted(pid_tgid))
		return 0;
	park_event(tid, nr, a, nargs);
	/* stamped last, so the capture above is not part of the latency */
	stamp_set(tid, nr, index);
	return 0;
}

static __always_inline int is_exit(int nr)
{
	return nr == LAT_NR_EXIT || nr == LAT_NR_EXIT_GROUP;
}

/* The timed call `nr` returns `ret` on this thread: counted if its entry was stamped. */
static __always_inline int lat_exit(void *ctx, s32 nr, s64 ret)
{
	u64 t = now();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct stamp *s = stamp_of(tid);
	u64 delta;
	s32 index;

	if (!s || !s->ts || s->nr != nr)
		return 0;
	delta = t - s->ts;
	index = s->index;
	stamp_done(tid, s);
	record(index, nr, pid_tgid >> 32, delta);
	finish_event(ctx, tid, ret, delta);
	return 0;
}

#ifdef LAT_RAW
/* raw tracepoint sys_enter(struct pt_regs *regs, long id): every syscall, 32-bit ones with
 * their own numbers included, so the number comes first and a compat call is dropped */
int lat_raw_enter(struct bpf_raw_tracepoint_args *ctx)
{
	s32 nr = ctx->args[1];
	int index = timed_index(nr);
	u64 a[4] = {};
	void *regs;

	if (index < 0)
		return 0;
#ifdef COMPAT_OFF
	if (read_u32((void *)bpf_get_current_task(), COMPAT_OFF) & COMPAT_MASK)
		return 0;
#endif
#if SLOWER_THAN_NS
	/* audit prints the registers a0..a3 whatever the syscall's arity */
	regs = (void *)ctx->args[0];
	READ_KERNEL(a[0], regs, OFF_REGS_ARG0);
	READ_KERNEL(a[1], regs, OFF_REGS_ARG1);
	READ_KERNEL(a[2], regs, OFF_REGS_ARG2);
	READ_KERNEL(a[3], regs, OFF_REGS_ARG3);
#endif
	return lat_enter(nr, index, a, 4);
}

/* raw tracepoint sys_exit(struct pt_regs *regs, long ret): the number is the registers'
 * (orig_ax on x86_64 still holds it) */
int lat_raw_exit(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = -1;

	READ_KERNEL(nr, (void *)ctx->args[0], OFF_REGS_NR);
	if (timed_index(nr) < 0)
		return 0;
	return lat_exit(ctx, nr, ctx->args[1]);
}
#endif

#ifdef LAT_BTF
/* The same hooks as BTF-typed raw tracepoints (tp_btf): ctx[0] is the struct pt_regs *,
 * read with plain loads (the verifier makes them fault-safe), ctx[1] the number at sys_enter
 * and the return value at sys_exit; the task and its compat flag likewise, through
 * bpf_get_current_task_btf: no helper call per read. */
#define REG(regs, off) (*(u64 *)((char *)(regs) + (off)))

int lat_btf_enter(unsigned long long *ctx)
{
	s32 nr = ctx[1];
	int index = timed_index(nr);
	u64 a[4] = {};

	if (index < 0)
		return 0;
#ifdef COMPAT_OFF
	if (*(u32 *)((char *)bpf_get_current_task_btf() + COMPAT_OFF) & COMPAT_MASK)
		return 0;
#endif
#if SLOWER_THAN_NS
	a[0] = REG((void *)ctx[0], OFF_REGS_ARG0);
	a[1] = REG((void *)ctx[0], OFF_REGS_ARG1);
	a[2] = REG((void *)ctx[0], OFF_REGS_ARG2);
	a[3] = REG((void *)ctx[0], OFF_REGS_ARG3);
#endif
	return lat_enter(nr, index, a, 4);
}

int lat_btf_exit(unsigned long long *ctx)
{
	long nr = REG((void *)ctx[0], OFF_REGS_NR);

	if (timed_index(nr) < 0)
		return 0;
	return lat_exit(ctx, nr, ctx[1]);
}
#endif

/* the timed syscalls' own tracepoints */
int on_sys_enter(struct sys_enter_ctx *ctx)
{
	u64 a[6] = {};
	int nr = ctx->nr;

#if SLOWER_THAN_NS
	bpf_probe_read_kernel(a, sizeof(a), ctx->args);
#endif
	return lat_enter(nr, timed_index(nr), a, syscall_nargs(nr));
}

int on_sys_exit(struct sys_exit_ctx *ctx)
{
	return lat_exit(ctx, ctx->nr, ctx->ret);
}

/* raw tracepoint sched_switch, still in the context of the task switched away from: once
 * exit_state is set (zombie or dead) and the switch is no preemption, it is the last one */
int on_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
	u64 t = now();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct stamp *s = stamp_of(tid);
	u64 delta;
	s32 nr, index;

	if (!s || !s->ts || !is_exit(s->nr) || ctx->args[0] /* preempted */)
		return 0;
	if (!read_u32((void *)bpf_get_current_task(), OFF_TASK_EXIT_STATE))
		return 0;
	delta = t - s->ts;
	nr = s->nr;
	index = s->index;
	stamp_done(tid, s);
	record(index, nr, pid_tgid >> 32, delta);
	finish_event(ctx, tid, 0, delta);
	return 0;
}

#if defined(FUNC_FENTRY) || defined(FUNC_KPROBE)
static __always_inline int func_enter(void)
{
	return lat_enter(FUNC_NR, 0, 0, 0);
}

static __always_inline int func_exit(void)
{
	return lat_exit(0, FUNC_NR, 0);
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
