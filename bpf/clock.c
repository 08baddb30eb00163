/* Who changes the time: clock_settime, settimeofday, adjtimex and clock_adjtime calls that
 * modify (modes != 0 and not the read-only ADJ_OFFSET_SS_READ), and RTC_SET_TIME ioctls.
 *
 * At entry: what is asked, read from the caller's memory (the new time, the offset of
 * ADJ_SETOFFSET, the modes, the rtc_time), and CLOCK_TAI; at exit CLOCK_TAI again. TAI
 * moves with every setting of the wall clock and never by its own leap, so the two
 * readings less the TAI offset are the wall time before and after the call.
 */
/* RTC_SET_TIME comes from user space (compat/ioctls.py), as the syscall numbers do */
#define ADJ_SETOFFSET 0x0100
#define ADJ_NANO 0x2000
#define ADJ_OFFSET_SS_READ 0xa001
#define TIMEX_TIME 72           /* offsetof(struct __kernel_timex, time) */
/* what a call asks for, in family_extra.asked */
#define ASKED_NOTHING 0
#define ASKED_TIME 1
#define ASKED_OFFSET 2

struct family_extra {
	u64 tai_before, tai_after;
	s64 sec, nsec;          /* asked: the new time, or ADJ_SETOFFSET's offset */
	u32 asked;              /* ASKED_NOTHING, ASKED_TIME, ASKED_OFFSET */
	u32 modes;              /* adjtimex, clock_adjtime */
	s32 rtc[9];             /* RTC_SET_TIME: struct rtc_time */
	u32 has_rtc;
};

#include "syscall_event.h"

static __always_inline int family_want(int nr, const struct sc_call *c)
{
	/* adjtimex's record holds one argument: ioctl's request is copied, for ioctl alone */
	if (nr == NR_IOCTL)
		return (u32)call_arg(c, 1) == RTC_SET_TIME;
	return nr == NR_CLOCK_SETTIME || nr == NR_SETTIMEOFDAY || nr == NR_ADJTIMEX ||
	       nr == NR_CLOCK_ADJTIME;
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	struct family_extra *x = &ev->extra;
	s64 t[2] = {};
	u64 tx;

	__builtin_memset(x, 0, sizeof(*x));
	x->tai_before = bpf_ktime_get_tai_ns();
	if (ev->nr == NR_IOCTL) {
		x->has_rtc = bpf_probe_read_user(x->rtc, sizeof(x->rtc), (void *)ev->args[2]) == 0;
		return 1;
	}
	if (ev->nr == NR_CLOCK_SETTIME || ev->nr == NR_SETTIMEOFDAY) {
		void *p = (void *)(ev->nr == NR_CLOCK_SETTIME ? ev->args[1] : ev->args[0]);

		if (p && bpf_probe_read_user(t, sizeof(t), p) == 0) {
			x->sec = t[0];
			/* settimeofday takes microseconds */
			x->nsec = ev->nr == NR_SETTIMEOFDAY ? t[1] * 1000 : t[1];
			x->asked = ASKED_TIME;
		}
		return 1;
	}
	tx = ev->nr == NR_ADJTIMEX ? ev->args[0] : ev->args[1];
	if (bpf_probe_read_user(&x->modes, sizeof(x->modes), (void *)tx) != 0)
		return 1;       /* unreadable: the kernel answers EFAULT, reported */
	if (x->modes == 0 || x->modes == ADJ_OFFSET_SS_READ)
		return 0;       /* a read */
	if ((x->modes & ADJ_SETOFFSET) &&
	    bpf_probe_read_user(t, sizeof(t), (void *)(tx + TIMEX_TIME)) == 0) {
		x->sec = t[0];
		x->nsec = (x->modes & ADJ_NANO) ? t[1] : t[1] * 1000;
		x->asked = ASKED_OFFSET;
	}
	return 1;
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	ev->extra.tai_after = bpf_ktime_get_tai_ns();
	return 1;
}

#include "syscall_programs.h"
