/* A sockaddr copied from user memory, as the kernel copies it for audit's SOCKADDR record
 * (move_addr_to_kernel: 0 < len <= sizeof(struct sockaddr_storage)). Shared by bind and net. */
#ifndef AUDTRACE_SOCKADDR_H
#define AUDTRACE_SOCKADDR_H

#define SADDR_MAX 128           /* sizeof(struct sockaddr_storage) */
#define AF_INET 2
#define AF_INET6 10

/* Bytes copied into dst (SADDR_MAX long), 0 when the length is out of range or the copy
 * faults. */
static __always_inline u32 copy_sockaddr(u8 *dst, u64 len, const void *src)
{
	u32 n;

	if (len == 0 || len > SADDR_MAX)
		return 0;
	n = len - 1;
	/* the bound must sit on the register passed as the size: older verifiers (6.1) do not
	 * carry the comparison above over to it, and clang would fold the mask away without
	 * the barrier */
	asm volatile("" : "+r"(n));
	n = (n & (SADDR_MAX - 1)) + 1;
	return bpf_probe_read_user(dst, n, src) == 0 ? n : 0;
}

#endif
