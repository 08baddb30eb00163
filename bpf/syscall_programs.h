/* The two programs every syscall family attaches to its sys_enter_* and sys_exit_*
 * tracepoints. Included last by a family's .c file, after its hooks (see syscall_event.h).
 *
 * syscall_nargs(nr) comes from user space, read from the tracepoints' own formats.
 */

int on_sys_enter(struct sys_enter_ctx *ctx)
{
	u64 a[6] = {};
	struct syscall_event *ev;

	/* one copy: the verifier allows no variable offsets into the context */
	bpf_probe_read_kernel(a, sizeof(a), ctx->args);
	if (!family_want(ctx->nr, a))
		return 0;
	ev = capture_current();
	if (!ev)
		return 0;
	ev->kind = EV_SYSCALL;
	ev->nr = ctx->nr;
	ev->ret = 0;
	capture_args(ev->args, a, ctx->nr, syscall_nargs(ctx->nr));
	if (!family_enter(ev, a))
		return 0;
	if (inflight.update(&ev->tid, ev) != 0)
		drops.increment(0);
	return 0;
}

int on_sys_exit(struct sys_exit_ctx *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct syscall_event *ev = inflight.lookup(&tid);

	if (!ev)
		return 0;
	ev->ret = ctx->ret;
	if (family_exit(ctx, ev))
		submit(ctx, ev);
	inflight.delete(&tid);
	return 0;
}
