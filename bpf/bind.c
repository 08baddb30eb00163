/* Who binds which address, and whether the kernel refused it.
 *
 * bind(2) through syscall_programs.h. At sys_enter the sockaddr is copied from user memory
 * the way the kernel's move_addr_to_kernel() copies it for audit's SOCKADDR record: a2
 * bytes when 0 < a2 <= 128 (sizeof(struct sockaddr_storage)); otherwise the kernel rejects
 * the call before copying and audit writes no SOCKADDR, so neither do we.
 * The filters (port, address, family, pid, comm) run here, before the event is parked;
 * --failed runs at sys_exit. The caller's network namespace and whether it has an audit
 * context (without one, kernel audit never records its syscalls) are read from its task.
 *
 * Where the kernel offers kprobes, bind_conflict.c (included at the end when
 * CONFLICT_KPROBES) adds the kernel's own conflict decision to the parked event.
 */
#include "sockaddr.h"

struct family_extra {
	u32 addrlen;            /* a2 */
	u32 saddr_len;          /* bytes of saddr read; 0: no SOCKADDR record */
	u32 netns;              /* inode of the caller's network namespace */
	u32 audit_ctx;          /* the task has an audit context */
	u16 family;             /* sa_family of saddr */
	u16 port;               /* host order, inet/inet6 only */
	/* the kernel's conflict decision (kprobe path; cf_seen = 0 elsewhere) */
	u32 cf_seen;            /* the conflict check ran in this bind */
	s32 cf_result;          /* its return value: nonzero = conflict */
	u32 cf_func;            /* which check: CF_FUNC_CSK, CF_FUNC_UDP (bind_conflict.c) */
	u16 cf_port;            /* the port the bucket holds (host order) */
	u16 cf_family;          /* the conflicting socket's family, 0 if none was seen */
	u8 cf_state, cf_reuse, cf_reuseport, cf_ipv6only;
	u32 cf_uid;
	u32 cf_netns;
	u64 cf_inode;
	u16 cf_lport, cf_rport; /* host order, network order as kept by the kernel */
	u8 cf_laddr[16];
	u8 cf_raddr[16];
	u8 saddr[SADDR_MAX];
};
#define FAMILY_EXTRA_LEN(ev) (__builtin_offsetof(struct family_extra, saddr) + \
	(ev)->extra.saddr_len)

#include "syscall_event.h"

BPF_HASH(filter_port, u32, u8, 64);

static __always_inline u32 netns_of(void *task)
{
	void *nsproxy = read_ptr(task, OFF_TASK_NSPROXY);
	void *net;

	if (!nsproxy)
		return 0;
	net = read_ptr(nsproxy, OFF_NSPROXY_NET_NS);
	return net ? read_u32(net, OFF_NET_NS_INUM) : 0;
}

/* audtrace's own binds (netlink sockets of its sock_diag lookups) are not reported */
static __always_inline int family_want(int nr, const struct sc_call *c)
{
	return nr == NR_BIND && (bpf_get_current_pid_tgid() >> 32) != SELF_TGID;
}

/* --addr: ADDR_WANTED(family, w) compares the address words w[0..3] (network order, as
 * in the sockaddr) with the constants user space compiled in. */
static __always_inline int addr_wanted(struct family_extra *x)
{
	u32 w[4] = {};

	if (x->family == AF_INET)
		__builtin_memcpy(w, &x->saddr[4], 4);
	else
		__builtin_memcpy(w, &x->saddr[8], 16);
	return ADDR_WANTED(x->family, w);
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	struct family_extra *x = &ev->extra;
	void *task = (void *)bpf_get_current_task();
	u64 len = ev->args[2];
	int inet;

	x->addrlen = (u32)len;
	x->saddr_len = 0;
	x->family = 0;
	x->port = 0;
	x->cf_seen = 0;
	x->cf_result = 0;
	x->cf_family = 0;
	x->netns = netns_of(task);
#ifdef OFF_TASK_AUDIT_CONTEXT
	x->audit_ctx = read_ptr(task, OFF_TASK_AUDIT_CONTEXT) != 0;
#else
	x->audit_ctx = 0;
#endif
	x->saddr_len = copy_sockaddr(x->saddr, len, (void *)ev->args[1]);
	if (x->saddr_len >= 2)
		x->family = *(u16 *)x->saddr;
	inet = (x->family == AF_INET && x->saddr_len >= 8) ||
	       (x->family == AF_INET6 && x->saddr_len >= 24);
	if (inet)
		x->port = bpf_ntohs(*(u16 *)&x->saddr[2]);
	if (FAMILY_MASK) {
		if (!((x->family == AF_INET && (FAMILY_MASK & 1)) ||
		      (x->family == AF_INET6 && (FAMILY_MASK & 2))))
			return 0;
	}
	if (FILTER_PORT) {
		u32 port = x->port;

		if (!inet || !filter_port.lookup(&port))
			return 0;
	}
	if (FILTER_ADDR && (!inet || !addr_wanted(x)))
		return 0;
	return 1;
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	return !ONLY_FAILED || ev->ret < 0;
}

#include "syscall_programs.h"

#if CONFLICT_KPROBES
#include "bind_conflict.c"
#endif
