/* The kernel's bind-conflict decision, seen from inside, where kprobes exist.
 *
 * Included by bind.c when CONFLICT_KPROBES. Each probe runs inside a bind(2) that bind.c
 * parked in `inflight` (found by thread id), and adds to it:
 *   inet_csk_bind_conflict (TCP, DCCP): entry reads the port from the bind bucket (the
 *     rejected socket's own port is still 0), return says conflict or not;
 *   inet_bind_conflict (6.1+: one call per owner of the bucket): the owner that conflicts,
 *     captured at its return: addresses, port, state, SO_REUSEADDR/SO_REUSEPORT, uid,
 *     netns, socket inode;
 *   udp_lib_get_port: entry has the port, a nonzero return is a conflict.
 * Argument positions and struct offsets differ between kernel versions: user space takes
 * them from BTF (tracer/bind/conflict.py) and defines CSK_TB(ctx), BC_SK2(ctx), OFF_CF_*.
 * Functions this kernel lacks (inlined, renamed) are left out by HAVE_* flags.
 */

#include <uapi/linux/ptrace.h>   /* struct pt_regs, for PT_REGS_PARMn/PT_REGS_RC */

#define CF_FUNC_CSK 1
#define CF_FUNC_UDP 2

/* inet_bind_conflict's sk2, between its entry and its return */
BPF_HASH(cf_candidate, u32, u64, 1024);

static __always_inline struct syscall_event *parked(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();

	return inflight.lookup(&tid);
}

/* A conflict check's return value, kept when it refused the port (inet_csk_bind_conflict,
 * udp_lib_get_port). */
static __always_inline int note_result(struct pt_regs *ctx)
{
	struct syscall_event *ev = parked();
	s32 ret = (s32)PT_REGS_RC(ctx);

	if (ev && ret)
		ev->extra.cf_result = ret;
	return 0;
}

static __always_inline void capture_owner(struct family_extra *x, void *sk2)
{
	void *sock, *inode, *net;
	u8 bits = 0;

	READ_KERNEL(x->cf_family, sk2, OFF_CF_SKC_FAMILY);
	READ_KERNEL(x->cf_state, sk2, OFF_CF_SKC_STATE);
	READ_KERNEL(bits, sk2, OFF_CF_SKC_REUSE_BYTE);
	x->cf_reuse = (bits >> CF_REUSE_SHIFT) & 0xf;
	x->cf_reuseport = (bits >> CF_REUSEPORT_SHIFT) & 1;
	x->cf_ipv6only = (bits >> CF_IPV6ONLY_SHIFT) & 1;
	READ_KERNEL(x->cf_lport, sk2, OFF_CF_SKC_NUM);
	READ_KERNEL(x->cf_rport, sk2, OFF_CF_SKC_DPORT);
	if (x->cf_family == AF_INET6) {
		READ_KERNEL(x->cf_laddr, sk2, OFF_CF_SKC_V6_RCV_SADDR);
		READ_KERNEL(x->cf_raddr, sk2, OFF_CF_SKC_V6_DADDR);
	} else {
		bpf_probe_read_kernel(x->cf_laddr, 4, sk2 + OFF_CF_SKC_RCV_SADDR);
		bpf_probe_read_kernel(x->cf_raddr, 4, sk2 + OFF_CF_SKC_DADDR);
	}
	READ_KERNEL(x->cf_uid, sk2, OFF_CF_SK_UID);
	net = read_ptr(sk2, OFF_CF_SKC_NET);
	x->cf_netns = net ? read_u32(net, OFF_NET_NS_INUM) : 0;
	x->cf_inode = 0;
	sock = read_ptr(sk2, OFF_CF_SK_SOCKET);
	if (sock) {
		/* struct socket lives inside struct socket_alloc, next to its inode */
		inode = sock - OFF_CF_SOCKALLOC_SOCKET + OFF_CF_SOCKALLOC_INODE;
		READ_KERNEL(x->cf_inode, inode, OFF_CF_INODE_INO);
	}
}

#if HAVE_INET_CSK_BIND_CONFLICT
int kprobe__inet_csk_bind_conflict(struct pt_regs *ctx)
{
	struct syscall_event *ev = parked();
	void *tb = (void *)CSK_TB(ctx);

	if (!ev)
		return 0;
	ev->extra.cf_seen = 1;
	ev->extra.cf_func = CF_FUNC_CSK;
	if (tb)
		READ_KERNEL(ev->extra.cf_port, tb, OFF_CF_TB_PORT);
	return 0;
}

int kretprobe__inet_csk_bind_conflict(struct pt_regs *ctx)
{
	return note_result(ctx);
}
#endif

#if HAVE_INET_BIND_CONFLICT
int kprobe__inet_bind_conflict(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 sk2 = (u64)BC_SK2(ctx);

	if (parked())
		cf_candidate.update(&tid, &sk2);
	return 0;
}

int kretprobe__inet_bind_conflict(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *sk2 = cf_candidate.lookup(&tid);
	struct syscall_event *ev;

	if (!sk2)
		return 0;
	ev = parked();
	/* the first owner that conflicts is the one the kernel stopped at */
	if (ev && (u8)PT_REGS_RC(ctx) && !ev->extra.cf_family && *sk2)
		capture_owner(&ev->extra, (void *)*sk2);
	cf_candidate.delete(&tid);
	return 0;
}
#endif

#if HAVE_UDP_LIB_GET_PORT
int kprobe__udp_lib_get_port(struct pt_regs *ctx)
{
	struct syscall_event *ev = parked();

	if (!ev)
		return 0;
	ev->extra.cf_seen = 1;
	ev->extra.cf_func = CF_FUNC_UDP;
	ev->extra.cf_port = (u16)UDP_SNUM(ctx);
	return 0;
}

int kretprobe__udp_lib_get_port(struct pt_regs *ctx)
{
	return note_result(ctx);
}
#endif
