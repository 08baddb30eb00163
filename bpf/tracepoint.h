/* What a syscall tracepoint hands a program: its record's layout, and the caller's
 * registers for what the record leaves out.
 */
#ifndef AUDTRACE_TRACEPOINT_H
#define AUDTRACE_TRACEPOINT_H

#include "kernel.h"

/* The layout of a syscall tracepoint record (syscalls:sys_enter_* / sys_exit_*): common
 * header, the syscall number, then each argument widened to 8 bytes. Declared once so one
 * program serves every syscall of a family. */
struct sys_enter_ctx {
	u64 common;
	s32 nr;
	u32 pad;
	u64 args[6];
};

struct sys_exit_ctx {
	u64 common;
	s32 nr;
	u32 pad;
	s64 ret;
};

/* Syscall arguments a0..a3 as audit records them: the registers at entry, also those past
 * the syscall's own arity (audit prints them whatever they hold). */
static __always_inline void capture_args(u64 *args, const u64 *tp_args, int nr, int nargs)
{
	/* a tracepoint record holds only the syscall's own arguments */
	args[0] = nargs > 0 ? tp_args[0] : 0;
	args[1] = nargs > 1 ? tp_args[1] : 0;
	args[2] = nargs > 2 ? tp_args[2] : 0;
	args[3] = nargs > 3 ? tp_args[3] : 0;
#ifdef HAVE_TASK_PT_REGS
	{
		struct task_struct *t = bpf_get_current_task_btf();
		void *regs = (void *)bpf_task_pt_regs(t);
		long orig = -1;

		READ_KERNEL(orig, regs, OFF_REGS_NR);
		if (orig == nr) {
			READ_KERNEL(args[0], regs, OFF_REGS_ARG0);
			READ_KERNEL(args[1], regs, OFF_REGS_ARG1);
			READ_KERNEL(args[2], regs, OFF_REGS_ARG2);
			READ_KERNEL(args[3], regs, OFF_REGS_ARG3);
		}
	}
#endif
}

#endif
