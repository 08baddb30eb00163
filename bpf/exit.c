/* How processes end: exit and exit_group with their code, and deaths by a signal.
 *
 * exit and exit_group never return, so there is no sys_exit: the parked call is submitted
 * from sched:sched_process_exit, where audit too writes its record (audit_free() at task
 * exit), with the task's exit_code. A process with no parked call whose last thread goes
 * (group_dead) with a signal in exit_code (low 7 bits; 0x80: core dumped) was killed:
 * reported as EV_TASK_EXIT, with the last sender of that signal to it, remembered from the
 * raw tracepoint signal_generate.
 * Filters: --comm/--pid (sender filters of syscall_event.h), --code (a0, as audit's rule),
 * --exe (the executable's inode and device, as audit's `-F exe=` compares them).
 */
#include "file.h"

#define EV_TASK_EXIT 3

struct family_extra {
	s32 exit_code;          /* task->exit_code: status << 8, or the signal | 0x80 if core */
	u32 group_dead;
	u32 killer_pid;         /* last sender of the fatal signal; 0 if none seen */
	s32 killer_sig;
	char killer_comm[COMM_LEN];
};

#include "syscall_event.h"

struct sender {
	u32 pid;
	s32 sig;
	char comm[COMM_LEN];
};

/* victim tgid -> who last signalled it */
BPF_TABLE("lru_hash", u32, struct sender, last_signal, 4096);

static __always_inline int exe_wanted(void *task)
{
	struct exe_id exe = {};

	if (!FILTER_EXE)
		return 1;
	exe_identity(&exe, task);
	return exe.ino == EXE_INO && exe.dev == EXE_DEV;
}

static __always_inline int family_want(int nr, const struct sc_call *c)
{
	if (nr != NR_EXIT && nr != NR_EXIT_GROUP)
		return 0;
	return !FILTER_CODE || call_arg(c, 0) == EXIT_CODE;
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	__builtin_memset(&ev->extra, 0, sizeof(ev->extra));
	return exe_wanted((void *)bpf_get_current_task());
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	return 0;       /* never reached: these calls do not return */
}

#include "syscall_programs.h"

/* Is the exiting task its process's last thread? The tracepoint says so where it has the
 * field (TP_GROUP_DEAD, read from its format); before, do_exit() has already taken the
 * signal struct's live count to 0 for the last thread when the tracepoint fires. */
#ifdef TP_GROUP_DEAD
#define GROUP_DEAD(args, task) ((args)->group_dead)
#else
#define GROUP_DEAD(args, task) (read_u32(read_ptr(task, OFF_TASK_SIGNAL), OFF_SIGNAL_LIVE) == 0)
#endif

static __always_inline void add_killer(struct syscall_event *ev, u32 tgid, s32 sig)
{
	struct sender *s = last_signal.lookup(&tgid);

	if (s && s->sig == sig) {
		ev->extra.killer_pid = s->pid;
		ev->extra.killer_sig = s->sig;
		bpf_probe_read_kernel(ev->extra.killer_comm, COMM_LEN, s->comm);
	}
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid, tgid = pid_tgid >> 32;
	void *task = (void *)bpf_get_current_task();
	s32 code = (s32)read_u32(task, OFF_TASK_EXIT_CODE);
	struct syscall_event *ev = none_parked() ? 0 : inflight.lookup(&tid);

	if (ev) {
		ev->extra.exit_code = code;
		ev->extra.group_dead = GROUP_DEAD(args, task);
		submit(args, ev);
		unpark(tid);
		return 0;
	}
	/* a plain end of one thread, or a death by signal seen on each thread: report the
	 * process once, as its last thread goes */
	if (!(code & 0x7f) || !GROUP_DEAD(args, task) || FILTER_CODE)
		return 0;
	ev = capture_current();
	if (!ev || !exe_wanted(task))
		return 0;
	ev->kind = EV_TASK_EXIT;
	ev->nr = -1;
	ev->ret = 0;
	ev->args[0] = ev->args[1] = ev->args[2] = ev->args[3] = 0;
	__builtin_memset(&ev->extra, 0, sizeof(ev->extra));
	ev->extra.exit_code = code;
	ev->extra.group_dead = 1;
	add_killer(ev, tgid, code & 0x7f);
	submit(args, ev);
	last_signal.delete(&tgid);
	return 0;
}

RAW_TRACEPOINT_PROBE(signal_generate)
{
	s32 sig = (s32)ctx->args[0];
	void *victim = (void *)ctx->args[2];
	s32 result = (s32)ctx->args[4];
	struct sender s = {};
	u32 tgid;

	/* SIGCHLD at every exit would only churn the table; result 0: delivered */
	if (sig == 17 || result != 0)
		return 0;
	tgid = read_u32(victim, OFF_TASK_TGID);
	s.pid = bpf_get_current_pid_tgid() >> 32;
	s.sig = sig;
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	last_signal.update(&tgid, &s);
	return 0;
}
