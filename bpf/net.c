/* Who connects where, and who accepts whom: connect, accept, accept4 with SOCKADDR.
 *
 * connect: the sockaddr is copied at entry as the kernel's move_addr_to_kernel() copies
 * it for audit (a2 bytes when 0 < a2 <= 128), so refused and failed connects have it too.
 * accept/accept4: the peer is known at exit only; the kernel hands it to audit in
 * move_addr_to_user() and writes it, with its length, to the caller's buffers, where it
 * is read back here: min(buffer size given, length returned) bytes. A NULL buffer gets
 * no SOCKADDR, as in audit.
 * Filters (port, address) on the sockaddr, at entry for connect and at exit for accept.
 */
#include "sockaddr.h"

struct family_extra {
	u64 addr_ptr;           /* accept: the caller's buffers */
	u64 len_ptr;
	u32 len_in;             /* accept: the buffer size the caller gave */
	u32 addrlen;            /* connect: a2; accept: the length the kernel returned */
	u32 saddr_len;          /* bytes of saddr read; 0: no SOCKADDR record */
	u16 family;
	u16 port;               /* host order, inet/inet6 only */
	u8 saddr[SADDR_MAX];
};
#define FAMILY_EXTRA_LEN(ev) (__builtin_offsetof(struct family_extra, saddr) + \
	(ev)->extra.saddr_len)

#include "syscall_event.h"

struct addr_key {
	u32 family;
	u8 addr[16];
};

BPF_HASH(filter_port, u32, u8, 64);
BPF_HASH(filter_addr, struct addr_key, u8, 64);

static __always_inline int family_want(int nr, const struct sc_call *c)
{
	return nr == NR_CONNECT || nr == NR_ACCEPT || nr == NR_ACCEPT4;
}

static __always_inline void read_saddr(struct family_extra *x, u64 len, const void *src)
{
	x->family = 0;
	x->port = 0;
	x->saddr_len = copy_sockaddr(x->saddr, len, src);
	if (x->saddr_len >= 2)
		x->family = *(u16 *)x->saddr;
	if ((x->family == AF_INET && x->saddr_len >= 8) ||
	    (x->family == AF_INET6 && x->saddr_len >= 24))
		x->port = bpf_ntohs(*(u16 *)&x->saddr[2]);
}

static __always_inline int addr_wanted(struct family_extra *x)
{
	struct addr_key key = {};
	int inet = x->port || (x->family == AF_INET && x->saddr_len >= 8) ||
		   (x->family == AF_INET6 && x->saddr_len >= 24);

	if (FILTER_PORT) {
		u32 port = x->port;

		if (!inet || !filter_port.lookup(&port))
			return 0;
	}
	if (!FILTER_ADDR)
		return 1;
	if (!inet)
		return 0;
	key.family = x->family;
	if (x->family == AF_INET)
		__builtin_memcpy(key.addr, &x->saddr[4], 4);
	else
		__builtin_memcpy(key.addr, &x->saddr[8], 16);
	return filter_addr.lookup(&key) != 0;
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	struct family_extra *x = &ev->extra;
	const u64 *a = ev->args;

	x->addr_ptr = a[1];
	x->len_ptr = a[2];
	x->len_in = 0;
	x->addrlen = 0;
	x->saddr_len = 0;
	x->family = 0;
	x->port = 0;
	if (ev->nr == NR_CONNECT) {
		x->addrlen = (u32)a[2];
		read_saddr(x, a[2], (void *)a[1]);
		return addr_wanted(x);
	}
	if (a[1] && a[2])
		bpf_probe_read_user(&x->len_in, sizeof(x->len_in), (void *)a[2]);
	return 1;
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	struct family_extra *x = &ev->extra;
	u32 got = 0;

	if (ev->nr == NR_CONNECT)
		return 1;
	if (ev->ret >= 0 && x->addr_ptr && x->len_ptr &&
	    bpf_probe_read_user(&got, sizeof(got), (void *)x->len_ptr) == 0) {
		x->addrlen = got;
		read_saddr(x, got < x->len_in ? got : x->len_in, (void *)x->addr_ptr);
	}
	return addr_wanted(x);
}

#include "syscall_programs.h"
