/* The enter and exit every syscall family runs, whichever hook calls them
 * (syscall_hooks.h). Included last by a family's .c file, after its hooks (see
 * syscall_event.h).
 *
 * A call the family does not want costs the number test and the arguments its filter reads
 * (family_want), nothing else: no copy, no capture. At exit, while no call is parked, a
 * program returns before any helper call (none_parked).
 * syscall_nargs(nr) comes from user space, read from the tracepoints' own formats.
 */

static __always_inline int call_enter(void *ctx, const struct sc_call *c)
{
	struct syscall_event *ev;

	if (!family_want(c->nr, c))
		return 0;
	/* a 32-bit call of the same number (raw tracepoints only): not what was asked, as the
	 * per-syscall tracepoints never see one; tested after the filter, so only candidates
	 * pay for it */
	if (call_compat(c))
		return 0;
	ev = capture_current();
	if (!ev)
		return 0;
	ev->kind = EV_SYSCALL;
	ev->nr = c->nr;
	ev->ret = 0;
	call_capture_args(ev->args, c, 0);
	if (!family_enter(ev))
		return 0;
	park(ev);
	return 0;
}

static __always_inline int call_exit(void *ctx, s64 ret)
{
	u32 tid;
	struct syscall_event *ev = parked_call(&tid);

	if (!ev)
		return 0;
	ev->ret = ret;
	if (family_exit(ctx, ev))
		submit(ctx, ev);
	unpark(tid);
	return 0;
}

#include "syscall_hooks.h"
