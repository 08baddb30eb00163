/* Who executes what: execve and execveat, as audit's EXECVE record gives them.
 *
 * At entry the file name as given (PATH's name=) is copied; the event is parked as every
 * family's is. At exit of a successful exec the task runs the new image, as when audit
 * writes its records: its credentials (a setuid binary's euid), comm, executable and
 * command line are captured again, and argv is read where audit reads it, from the new
 * mm's arg_start..arg_end; argc from the top of the new stack. A failed exec keeps the
 * caller's identity and has no EXECVE record, as in audit.
 * What a successful exec adds (argv, the file now mapped, the working directory) is too
 * large for the parked event: it is assembled in a map value of its own CPU (an array
 * indexed by CPU: per-CPU map values are limited to 32 KiB) and sent as the event's extra,
 * argv at its used length.
 */
#include "file.h"

#define NAME_MAX_LEN 256
#define ARGV_MAX 32768          /* bytes of argv kept; argv_full says how many there were */

struct family_extra {
	char filename[NAME_MAX_LEN];
};

#define WIRE_SPAN 65536         /* room for exec_extra */
#include "syscall_event.h"

/* The extra on the wire: the parked name, then what exit adds. */
struct exec_extra {
	char filename[NAME_MAX_LEN];
	u64 argc;
	u32 argv_len;           /* bytes in argv */
	u32 argv_full;          /* arg_end - arg_start */
	struct file_info file;  /* the executable now mapped: its inode (success only) */
	struct exe_path cwd;
	char argv[ARGV_MAX];    /* last: sent at argv_len */
};

BPF_ARRAY(exec_out, struct exec_extra, MAX_CPUS);

static __always_inline int family_want(int nr, const struct sc_call *c)
{
	return nr == NR_EXECVE || nr == NR_EXECVEAT;
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	const char *name = (const char *)(ev->nr == NR_EXECVEAT ? ev->args[1] : ev->args[0]);

	ev->extra.filename[0] = 0;
	bpf_probe_read_user_str(ev->extra.filename, sizeof(ev->extra.filename), name);
	return 1;
}

static __always_inline void capture_argv(struct exec_extra *out, void *task)
{
	void *mm = read_ptr(task, OFF_TASK_MM);
	unsigned long start = 0, end = 0, stack = 0;
	u64 len;

	out->argc = 0;
	out->argv_len = 0;
	out->argv_full = 0;
	if (!mm)
		return;
	READ_KERNEL(start, mm, OFF_MM_ARG_START);
	READ_KERNEL(end, mm, OFF_MM_ARG_END);
	READ_KERNEL(stack, mm, OFF_MM_START_STACK);
	if (stack)
		bpf_probe_read_user(&out->argc, sizeof(out->argc), (void *)stack);
	if (end <= start)
		return;
	out->argv_full = end - start;
	len = end - start;
	if (len > ARGV_MAX - 1)
		len = ARGV_MAX - 1;
	len &= ARGV_MAX - 1;    /* a bound the verifier can see */
	if (bpf_probe_read_user(out->argv, len, (void *)start) == 0)
		out->argv_len = len;
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct exec_extra *out = exec_out.lookup(&cpu);
	void *task = (void *)bpf_get_current_task();

	if (!out) {
		drops.increment(1);
		return 0;
	}
	if (ev->ret == 0) {
		/* the new image: who it runs as, what it is */
		capture_identity(&ev->id, task);
		capture_proctitle(&ev->title, task);
		capture_exe(&ev->exe, task);
	}
	if (PRIVILEGED && !(ev->id.uid != ev->id.euid && ev->id.euid == 0))
		return 0;
	bpf_probe_read_kernel(out->filename, NAME_MAX_LEN, ev->extra.filename);
	capture_cwd(&out->cwd, task);
	out->file.present = 0;
	out->file.path.len = 0;
	out->argc = 0;
	out->argv_len = 0;
	out->argv_full = 0;
	if (ev->ret == 0) {
		void *file = exe_file(task);

		/* PATH names the file as given: its inode, no walk (exe= has the path) */
		capture_inode(&out->file, file ? read_ptr(file, OFF_FILE_F_INODE) : 0);
		capture_argv(out, task);
	}
	submit_parts(ctx, ev, out, __builtin_offsetof(struct exec_extra, argv) + out->argv_len);
	return 0;   /* submitted here, not by the caller */
}

#include "syscall_programs.h"
