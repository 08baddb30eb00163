/* A path, walked up in the kernel from (dentry, vfsmount) through dentries and across
 * mounts: the executable's, a file's behind an fd (file.h), the working directory's.
 * d_path() is not callable from tracepoints, so the components travel leaf first and user
 * space joins them.
 */
#ifndef AUDTRACE_PATH_H
#define AUDTRACE_PATH_H

#include "task.h"

#define EXE_DEPTH 16        /* path components kept, leaf first */
#define EXE_PART 64         /* bytes of one component, its NUL included */
#define PATH_SPAN (EXE_DEPTH * EXE_PART)

/* A path as walked in the kernel: its components leaf first, each ending with its NUL, one
 * after the other; user space reverses and joins them. Sent at its used length. */
struct exe_path {
	u16 len;                /* bytes of buf in use */
	u16 depth;              /* components in buf */
	u16 truncated;          /* more components than EXE_DEPTH */
	u16 pad;
	/* a component is written at a variable offset below PATH_SPAN, up to EXE_PART bytes:
	 * the verifier must see room for the last one */
	char buf[PATH_SPAN + EXE_PART];
};

/* Unrolled, and written so the verifier can prune: it walks every path through a program,
 * and a program that takes three of these walks (exec did) or keeps exact ranges of the
 * component lengths passes its limit of a million instructions explored (E2BIG, which BCC
 * reports as "program too large"). A bounded loop passes that limit too. */
static __always_inline void capture_path(struct exe_path *out, void *dentry, void *vfsmnt)
{
	void *mnt = vfsmnt - OFF_MOUNT_MNT;
	u32 n = 0, off = 0;

	out->len = 0;
	out->depth = 0;
	out->truncated = 0;
	if (!dentry || !vfsmnt)
		return;
#pragma unroll
	for (int i = 0; i < EXE_DEPTH + 4; i++) {
		void *root = read_ptr(mnt, OFF_MOUNT_MNT + OFF_VFSMOUNT_MNT_ROOT);
		void *parent;
		long got;

		if (dentry == root) {
			void *mnt_parent = read_ptr(mnt, OFF_MOUNT_MNT_PARENT);

			if (mnt_parent == mnt)
				break;
			dentry = read_ptr(mnt, OFF_MOUNT_MNT_MOUNTPOINT);
			mnt = mnt_parent;
			continue;
		}
		parent = read_ptr(dentry, OFF_DENTRY_D_PARENT);
		if (parent == dentry)
			break;
		if (n >= EXE_DEPTH || off >= PATH_SPAN - EXE_PART) {
			out->truncated = 1;
			break;
		}
		/* a failed read leaves an empty string (the helper zeroes what it could not
		 * read): an empty component */
		got = bpf_probe_read_kernel_str(&out->buf[off], EXE_PART,
						read_ptr(dentry, OFF_DENTRY_D_NAME_NAME));
		if (got < 1)
			got = 1;
		/* off stays below PATH_SPAN (the test above): the masks change no value, but the
		 * verifier then sees the same ranges on every path and prunes instead of walking
		 * each combination of component lengths (6.1's verifier gives up otherwise) */
		off = (off + got) & (PATH_SPAN - 1);
		n = (n + 1) & 31;
		dentry = parent;
	}
	out->len = off;
	out->depth = n;
}

/* The path of a struct path at `p` (a file's f_path, fs_struct's pwd). */
static __always_inline void capture_struct_path(struct exe_path *out, void *p)
{
	capture_path(out, read_ptr(p, OFF_PATH_DENTRY), read_ptr(p, OFF_PATH_MNT));
}

/* The executable's path. */
static __always_inline void capture_exe(struct exe_path *exe, void *task)
{
	void *file = exe_file(task);

	exe->len = 0;
	exe->depth = 0;
	exe->truncated = 0;
	if (!file)
		return;
	capture_struct_path(exe, file + OFF_FILE_F_PATH);
}

#endif
