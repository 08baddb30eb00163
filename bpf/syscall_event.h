/* One event per traced syscall: what every family shares.
 *
 * A family's .c file defines `struct family_extra` (what it adds: targets, a sockaddr...),
 * includes this header, defines its hooks, then includes syscall_programs.h:
 *
 *   family_want(nr, call)     cheap test of the number and the arguments (call_arg(call, i),
 *                             tracepoint.h), before anything is read or captured
 *   family_enter(ev)          fill ev->extra at entry (ev->args holds a0..a3); 0 to drop
 *   family_exit(ctx, ev)      complete ev->extra at exit; return 0 to drop
 *
 * Sender filters (FILTER_PID/UID/COMM) and the identity capture are common.
 */
#ifndef AUDTRACE_SYSCALL_EVENT_H
#define AUDTRACE_SYSCALL_EVENT_H

#include "path.h"
#include "task.h"
#include "tracepoint.h"

#define EV_SYSCALL 1

struct syscall_event {
	u64 ktime;              /* CLOCK_MONOTONIC at entry */
	u32 kind;               /* EV_SYSCALL, or a family's own kind */
	s32 nr;
	s64 ret;
	u64 args[4];
	u32 tid;
	/* bytes of title, extra and exe on the wire, set by submit() */
	u16 title_len, extra_len, exe_len;
	u16 exe_truncated;
	struct identity id;
	/* WIRE_HEAD ends here: what follows is sent at its used length, in this order */
	struct proctitle title;
	struct family_extra extra;
	struct exe_path exe;
};

#define WIRE_HEAD __builtin_offsetof(struct syscall_event, title)
/* A family may send less than its whole extra (a sockaddr, targets...) */
#ifndef FAMILY_EXTRA_LEN
#define FAMILY_EXTRA_LEN(ev) sizeof(struct family_extra)
#endif
/* Room for the largest extra a family sends (a power of two): the head and the title take
 * less than 512 bytes, so the extra ends below WIRE_SPAN and the exe path after it fits */
#ifndef WIRE_SPAN
#define WIRE_SPAN 4096
#endif
#define EXTRA_MAX (WIRE_SPAN - 512)

struct wire_buf {
	char b[2 * WIRE_SPAN];
};

BPF_HASH(inflight, u32, struct syscall_event, 4096);
BPF_PERCPU_ARRAY(scratch, struct syscall_event, 1);
/* one buffer a CPU where an event is laid out at its used length (an array indexed by CPU:
 * per-CPU values are limited to 32 KiB, exec's argv is larger) */
BPF_ARRAY(wire, struct wire_buf, MAX_CPUS);
/* events lost, counted where they are lost: [0] in-flight table full, [1] output full.
 * (The perf buffer's own lost records arrive only once it has room again, so the last
 * burst's losses could otherwise stay unreported.) */
BPF_ARRAY(drops, u64, 2);

/* The output: the BPF ring buffer (one for all CPUs, in submission order) where the kernel
 * has it, else per-CPU perf buffers. Nothing wakes the reader per event: user space reads
 * at every poll interval, and at once while there is more (tracer/ebpf/probes.py). */
#ifdef USE_RINGBUF
#define RB_NO_WAKEUP 1
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline int emit(void *ctx, void *data, u32 size)
{
	return events.ringbuf_output(data, size, RB_NO_WAKEUP);
}
#else
BPF_PERF_OUTPUT(events);

static __always_inline int emit(void *ctx, void *data, u32 size)
{
	return events.perf_submit(ctx, data, size);
}
#endif

/* Calls parked in `inflight` (by park()), machine-wide. While there are none, sys_exit
 * returns on an array load the verifier inlines, before the per-thread lookup, a helper
 * call. A count left high (a thread that never came back) costs later exits only that
 * lookup, never a wrong event. */
BPF_ARRAY(parked_calls, u64, 1);

static __always_inline int none_parked(void)
{
	u32 zero = 0;
	u64 *n = parked_calls.lookup(&zero);

	return !n || *n == 0;
}

/* At a syscall's exit, the call this thread parked at its enter (its thread id in *tid),
 * or 0: while no call is parked, before any helper call. */
static __always_inline struct syscall_event *parked_call(u32 *tid)
{
	if (none_parked())
		return 0;
	*tid = (u32)bpf_get_current_pid_tgid();
	return inflight.lookup(tid);
}

/* The call waits for its exit in `inflight`, under its thread. */
static __always_inline void park(struct syscall_event *ev)
{
	u32 zero = 0;
	u64 *n;

	if (inflight.insert(&ev->tid, ev) != 0) {
		/* one left by a call that never returned takes the new one's place (counted
		 * already); a full table refuses both */
		if (inflight.update(&ev->tid, ev) != 0)
			drops.increment(0);
		return;
	}
	n = parked_calls.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void unpark(u32 tid)
{
	u32 zero = 0;
	u64 *n;

	if (inflight.delete(&tid) != 0)
		return;
	n = parked_calls.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, -1);
}

BPF_HASH(filter_pid, u32, u8, 64);
BPF_HASH(filter_uid, u32, u8, 64);
BPF_HASH(filter_comm, struct comm_key, u8, 64);

/* n capped at max, then masked so the verifier sees the bound on the register it gets
 * (clang would fold a plain mask after the comparison, older verifiers lose the comparison) */
static __always_inline u32 bounded(u32 n, u32 max, u32 mask)
{
	if (n > max)
		n = max;
	asm volatile("" : "+r"(n));
	return n & mask;
}

/* The event on the wire: the fixed head, then title, extra (extra_len bytes from `extra`,
 * which need not lie in ev: exec keeps its large part elsewhere) and exe at their lengths. */
static __always_inline void submit_parts(void *ctx, struct syscall_event *ev, const void *extra,
					 u32 extra_len)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct wire_buf *w = wire.lookup(&cpu);
	u32 off, n;

	if (!w) {
		drops.increment(1);
		return;
	}
	ev->title_len = bounded(ev->title.len, PROCTITLE_LEN, 255);
	ev->extra_len = bounded(extra_len, EXTRA_MAX, WIRE_SPAN - 1);
	ev->exe_len = bounded(ev->exe.len, PATH_SPAN, 2 * PATH_SPAN - 1);
	ev->exe_truncated = ev->exe.truncated;
	bpf_probe_read_kernel(w->b, WIRE_HEAD, ev);
	off = WIRE_HEAD;
	n = bounded(ev->title_len, PROCTITLE_LEN, 255);
	bpf_probe_read_kernel(&w->b[off], n, ev->title.buf);
	off += n;
	n = bounded(ev->extra_len, EXTRA_MAX, WIRE_SPAN - 1);
	bpf_probe_read_kernel(&w->b[off & (WIRE_SPAN - 1)], n, extra);
	off += n;
	n = bounded(ev->exe_len, PATH_SPAN, 2 * PATH_SPAN - 1);
	bpf_probe_read_kernel(&w->b[off & (WIRE_SPAN - 1)], n, ev->exe.buf);
	off += n;
	if (emit(ctx, w->b, bounded(off, 2 * WIRE_SPAN - 1, 2 * WIRE_SPAN - 1)) != 0)
		drops.increment(1);
}

static __always_inline void submit(void *ctx, struct syscall_event *ev)
{
	submit_parts(ctx, ev, &ev->extra, FAMILY_EXTRA_LEN(ev));
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

/* CLOCK_MONOTONIC; user space adds the offset to CLOCK_REALTIME. (Audit stamps with the
 * coarse clock, which tracepoint programs cannot read: audit's stamp may be a tick earlier.) */
static __always_inline u64 now(void)
{
	return bpf_ktime_get_ns();
}

/* The acting task, captured into a scratch event: identity, command line, executable. */
static __always_inline struct syscall_event *capture_current(void)
{
	u32 zero = 0;
	struct syscall_event *ev = scratch.lookup(&zero);
	void *task = (void *)bpf_get_current_task();

	if (!ev)
		return 0;
	capture_identity(&ev->id, task);
	if (!sender_wanted(&ev->id))
		return 0;
	capture_proctitle(&ev->title, task);
	capture_exe(&ev->exe, task);
	ev->tid = (u32)bpf_get_current_pid_tgid();
	ev->ktime = now();
	return ev;
}

#endif
