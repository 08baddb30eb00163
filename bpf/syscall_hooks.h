/* Where a family's syscall programs are hooked. One program text, two pairs of entry
 * points; user space loads and attaches one pair (tracer/ebpf/hooks.py chooses, and says
 * why in the tracing line):
 *
 *   on_sys_enter / on_sys_exit          syscalls:sys_enter_X / sys_exit_X of each traced
 *                                       syscall: only traced calls run a program, each after
 *                                       the tracepoint has prepared its record
 *   on_raw_sys_enter / on_raw_sys_exit  raw tracepoints sys_enter / sys_exit: every syscall
 *                                       of the machine runs them, the number is tested first
 *                                       (TRACED_NR, constants from user space); 32-bit calls
 *                                       come through too, with their own numbers
 *
 * The includer defines call_enter(ctx, call) and call_exit(ctx, ret).
 */
#ifndef TRACED_NR
#define TRACED_NR(nr) 1
#endif

int on_sys_enter(struct sys_enter_ctx *ctx)
{
	struct sc_call c = {.ctx = ctx, .regs = 0, .nr = ctx->nr, .raw = 0};

	return call_enter(ctx, &c);
}

int on_sys_exit(struct sys_exit_ctx *ctx)
{
	return call_exit(ctx, ctx->ret);
}

#ifdef RAW_SYSCALL_HOOKS
/* TP_PROTO(struct pt_regs *regs, long id) */
int on_raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	s64 nr = ctx->args[1];
	struct sc_call c = {.ctx = 0, .regs = ctx->args[0], .nr = nr, .raw = 1};

	if (!TRACED_NR(nr))
		return 0;
	return call_enter(ctx, &c);
}

/* TP_PROTO(struct pt_regs *regs, long ret): no number, the parked call says */
int on_raw_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	return call_exit(ctx, ctx->args[1]);
}
#endif
