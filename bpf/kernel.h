/* Reading the kernel's own structs in a BPF program.
 *
 * Kernel struct members are read at byte offsets that user space takes from the running
 * kernel's BTF and passes in as OFF_* constants (tracer/ebpf/layout.py), never through
 * the header tree BCC compiles against, whose layouts may belong to another kernel.
 */
#ifndef AUDTRACE_KERNEL_H
#define AUDTRACE_KERNEL_H

#define READ_KERNEL(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)(base) + (off))

/* The u32 at byte `off` of the kernel object at `base` (a task, a cred, an inode...). */
static __always_inline u32 read_u32(void *base, u32 off)
{
	u32 v = 0;
	READ_KERNEL(v, base, off);
	return v;
}

/* The pointer at byte `off` of the kernel object at `base`. */
static __always_inline void *read_ptr(void *base, u32 off)
{
	void *p = 0;
	READ_KERNEL(p, base, off);
	return p;
}

#endif
