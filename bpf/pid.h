/* The task a pid number names in the caller's pid namespace: find_vpid() then
 * pid_task(PIDTYPE_PID), for a syscall that named a target but generated no signal
 * (refused, signal 0), as audit's OBJ_PID still names it.
 */
#ifndef AUDTRACE_PID_H
#define AUDTRACE_PID_H

#include "kernel.h"

/* The namespace's IDR is an xarray: descend from its head, XA_CHUNK_SHIFT bits of the
 * index per level, until an entry is no longer an internal node.
 * Our names: the header tree's xarray.h may be in the same unit. */
#define IDR_CHUNK (SIZE_XA_NODE_SLOTS / 8)
#define IDR_MAX_LEVELS 6        /* 6 bits a level (4 with CONFIG_BASE_SMALL): 32-bit ids */

static __always_inline int idr_is_node(unsigned long entry)
{
	return (entry & 3) == 2 && entry > 4096;
}

/* 0 when nothing answers to the number. */
static __always_inline void *task_by_vpid(s32 nr)
{
	void *pid = read_ptr((void *)bpf_get_current_task(), OFF_TASK_THREAD_PID);
	u32 level = read_u32(pid, OFF_PID_LEVEL);
	void *ns = read_ptr(pid, OFF_PID_NUMBERS + (level & 31) * SIZE_UPID + OFF_UPID_NS);
	u64 index = (u32)(nr - (s32)read_u32(ns, OFF_PIDNS_IDR_BASE));
	unsigned long entry = (unsigned long)read_ptr(ns, OFF_PIDNS_XA_HEAD);
	u8 shift = 0;

	if (nr <= 0 || !ns)
		return 0;
	if (!idr_is_node(entry))
		return index == 0 ? (void *)entry : 0;  /* a head entry holds index 0 alone */
	READ_KERNEL(shift, entry - 2, OFF_XA_NODE_SHIFT);
	if ((index >> shift) >= IDR_CHUNK)
		return 0;                               /* past the tree's reach */
#pragma unroll
	for (int i = 0; i < IDR_MAX_LEVELS; i++) {
		void *node = (void *)(entry - 2);

		READ_KERNEL(shift, node, OFF_XA_NODE_SHIFT);
		entry = (unsigned long)read_ptr(node, OFF_XA_NODE_SLOTS +
						((index >> (shift & 63)) & (IDR_CHUNK - 1)) * 8);
		if (!idr_is_node(entry))
			break;
	}
	/* NULL (allocated, not attached yet) or an internal entry: nothing answers */
	if (!entry || (entry & 3) == 2)
		return 0;
	entry = (unsigned long)read_ptr((void *)entry, OFF_PID_TASKS);  /* tasks[PIDTYPE_PID] */
	return entry ? (void *)(entry - OFF_TASK_PID_LINKS) : 0;
}

#endif
