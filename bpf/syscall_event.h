/* One event per traced syscall: what every family shares.
 *
 * A family's .c file defines `struct family_extra` (what it adds: targets, a sockaddr...),
 * includes this header, defines its hooks, then includes syscall_programs.h:
 *
 *   family_want(nr, a)        cheap test on the arguments, before anything is captured
 *   family_enter(ev, a)       fill ev->extra at entry; return 0 to drop
 *   family_exit(ctx, ev)      complete ev->extra at exit; return 0 to drop
 *
 * Sender filters (FILTER_PID/UID/COMM) and the identity capture are common.
 */
#ifndef AUDTRACE_SYSCALL_EVENT_H
#define AUDTRACE_SYSCALL_EVENT_H

#include "identity.h"

#define EV_SYSCALL 1

struct syscall_event {
	u64 ktime;              /* CLOCK_MONOTONIC at entry */
	u32 kind;               /* EV_SYSCALL, or a family's own kind */
	s32 nr;
	s64 ret;
	u64 args[4];
	struct identity id;
	struct proctitle title;
	struct exe_path exe;
	struct family_extra extra;
};

BPF_HASH(inflight, u32, struct syscall_event, 4096);
BPF_PERCPU_ARRAY(scratch, struct syscall_event, 1);
BPF_PERF_OUTPUT(events);
/* events lost, counted where they are lost: [0] in-flight table full, [1] perf buffer full.
 * (The perf buffer's own lost records arrive only once it has room again, so the last
 * burst's losses could otherwise stay unreported.) */
BPF_ARRAY(drops, u64, 2);

BPF_HASH(filter_pid, u32, u8, 64);
BPF_HASH(filter_uid, u32, u8, 64);
BPF_HASH(filter_comm, struct comm_key, u8, 64);

static __always_inline void submit(void *ctx, struct syscall_event *ev)
{
	if (events.perf_submit(ctx, ev, sizeof(*ev)) != 0)
		drops.increment(1);
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
	ev->ktime = now();
	return ev;
}

#endif
