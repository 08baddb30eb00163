/* What a syscall hook hands a program: the call's number, its arguments (from the
 * tracepoint's record or the caller's registers) and, on raw tracepoints, whether it is a
 * 32-bit call.
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

/* Raw tracepoints need the caller's registers: where the arguments are (user space gives
 * their offsets in pt_regs, and says which hooks the program may use) */
#if defined(OFF_REGS_ARG0) && defined(OFF_REGS_ARG3)
#define RAW_SYSCALL_HOOKS 1
#endif

/* The call being entered, as the hook that saw it hands it over (syscall_hooks.h): the
 * syscall's own tracepoint (its record holds the number and the arguments) or the raw
 * tracepoint sys_enter (the number and the caller's registers). `raw` is a constant in
 * each entry point, so the compiler keeps only that hook's reads. */
struct sc_call {
	void *ctx;              /* per-syscall tracepoint: the record */
	u64 regs;               /* raw tracepoint: the caller's pt_regs, as a number (every
				 * read is an explicit helper call, which BCC leaves as written) */
	s32 nr;
	u32 raw;
};

/* Fewer than this many arguments in the record of some attached syscall: past it, a plain
 * load would make the kernel refuse the attach (a program may not read beyond the record of
 * any tracepoint it is attached to), so those are copied. User space sets it. */
#ifndef TP_DIRECT_ARGS
#define TP_DIRECT_ARGS 0
#endif

static __always_inline u64 reg_arg(u64 regs, int i)
{
	u64 v = 0;
#ifdef RAW_SYSCALL_HOOKS
	u32 off = i == 0 ? OFF_REGS_ARG0 : i == 1 ? OFF_REGS_ARG1 : i == 2 ? OFF_REGS_ARG2 :
		  OFF_REGS_ARG3;

	bpf_probe_read_kernel(&v, sizeof(v), (void *)(regs + off));
#endif
	return v;
}

/* A plain load of the record's argument i, at a constant offset. In asm: the compiler
 * would turn `cond ? args[1] : args[2]` into one load at a computed offset, which the
 * verifier refuses for a context. */
static __always_inline u64 tp_arg(void *ctx, const int i)
{
	u64 v;

	asm volatile("%0 = *(u64 *)(%1 + %2)" : "=r"(v) : "r"(ctx),
		     "i"(__builtin_offsetof(struct sys_enter_ctx, args) + 8 * i));
	return v;
}

/* Argument i (0..3, a constant) of a native call, read only when asked, so a call the
 * family does not want costs no copy: from the record, by a plain load where every attached
 * syscall's record holds it, else copied; from the registers on a raw tracepoint. */
static __always_inline u64 call_arg(const struct sc_call *c, const int i)
{
	u64 v = 0;

	if (c->raw)
		return reg_arg(c->regs, i);
	if (i < TP_DIRECT_ARGS)
		return tp_arg(c->ctx, i);
	bpf_probe_read_kernel(&v, sizeof(v), &((struct sys_enter_ctx *)c->ctx)->args[i]);
	return v;
}

/* Is the call a 32-bit (compat) one? Only raw tracepoints see those (the per-syscall
 * tracepoints skip them), numbered in the 32-bit table: x86's TS_COMPAT in
 * thread_info.status (set for the call, also for `int $0x80` from 64-bit code, which the
 * code segment would misjudge), arm64's TIF_32BIT. User space gives COMPAT_OFF/MASK. */
static __always_inline int call_compat(const struct sc_call *c)
{
#ifdef COMPAT_OFF
	if (c->raw)
		return (read_u32((void *)bpf_get_current_task(), COMPAT_OFF) & COMPAT_MASK) != 0;
#endif
	return 0;
}

/* Argument i (0..3) of a 32-bit call, as the kernel passes it to audit
 * (syscall_get_arguments: x86's bx, cx, dx, si). Raw tracepoints only. */
static __always_inline u64 compat_arg(const struct sc_call *c, int i)
{
	u64 v = 0;
#ifdef OFF_REGS_COMPAT_ARG3
	u32 off = i == 0 ? OFF_REGS_COMPAT_ARG0 : i == 1 ? OFF_REGS_COMPAT_ARG1 :
		  i == 2 ? OFF_REGS_COMPAT_ARG2 : OFF_REGS_COMPAT_ARG3;

	bpf_probe_read_kernel(&v, sizeof(v), (void *)(c->regs + off));
#endif
	return v;
}

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

/* a0..a3 of a call a family keeps (capture time: the copies cost only kept calls) */
static __always_inline void call_capture_args(u64 *args, const struct sc_call *c, int compat)
{
	if (c->raw) {
#pragma unroll
		for (int i = 0; i < 4; i++)
			args[i] = compat ? compat_arg(c, i) : reg_arg(c->regs, i);
		return;
	}
	{
		u64 a[6] = {};

		bpf_probe_read_kernel(a, sizeof(a), ((struct sys_enter_ctx *)c->ctx)->args);
		capture_args(args, a, c->nr, syscall_nargs(c->nr));
	}
}

#endif
