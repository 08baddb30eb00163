/* What audit's PATH and CWD records say of a file, read in the kernel.
 *
 * A file behind a descriptor: task->files->fdt->fd[n] (the fd table as the kernel keeps it),
 * then its inode (number, device, mode, owner, rdev) and its path, walked by capture_path()
 * (path.h). The working directory: task->fs->pwd. The executable's inode and device, as
 * audit's `-F exe=` compares them.
 */
#ifndef AUDTRACE_FILE_H
#define AUDTRACE_FILE_H

#include "path.h"

struct file_info {
	u64 ino;
	u32 dev, rdev;          /* kernel dev_t: major << 20 | minor */
	u32 mode, uid, gid;
	u32 present;            /* 0: no file (bad fd, or nothing captured) */
	struct exe_path path;   /* last: sent at its used length */
};

/* A file as `-F exe=` names it: inode number and the device of its filesystem. */
struct exe_id {
	u64 ino;
	u32 dev;
	u32 pad;
};

/* The struct file behind descriptor fd of task, or 0. */
static __always_inline void *fd_file(void *task, s64 fd)
{
	void *files = read_ptr(task, OFF_TASK_FILES);
	void *fdt, *arr, *file = 0;
	u32 max = 0;

	if (!files || fd < 0)
		return 0;
	fdt = read_ptr(files, OFF_FILES_FDT);
	if (!fdt)
		return 0;
	READ_KERNEL(max, fdt, OFF_FDT_MAX_FDS);
	if ((u64)fd >= max)
		return 0;
	arr = read_ptr(fdt, OFF_FDT_FD);
	if (!arr)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), arr + fd * sizeof(void *));
	return file;
}

/* The device of an inode's filesystem (its superblock's s_dev), 0 when unknown. */
static __always_inline u32 inode_dev(void *inode)
{
	void *sb = read_ptr(inode, OFF_INODE_I_SB);

	return sb ? read_u32(sb, OFF_SUPER_S_DEV) : 0;
}

static __always_inline void capture_inode(struct file_info *fi, void *inode)
{
	u16 mode = 0;
	unsigned long ino = 0;

	fi->present = 0;
	if (!inode)
		return;
	READ_KERNEL(ino, inode, OFF_INODE_I_INO);
	READ_KERNEL(mode, inode, OFF_INODE_I_MODE);
	fi->ino = ino;
	fi->mode = mode;
	fi->uid = read_u32(inode, OFF_INODE_I_UID);
	fi->gid = read_u32(inode, OFF_INODE_I_GID);
	fi->rdev = read_u32(inode, OFF_INODE_I_RDEV);
	fi->dev = inode_dev(inode);
	fi->present = 1;
}

/* Inode and path of an open file. */
static __always_inline void capture_file(struct file_info *fi, void *file)
{
	fi->present = 0;
	fi->path.len = 0;
	fi->path.depth = 0;
	fi->path.truncated = 0;
	if (!file)
		return;
	capture_inode(fi, read_ptr(file, OFF_FILE_F_INODE));
	capture_struct_path(&fi->path, file + OFF_FILE_F_PATH);
}

/* The working directory, as audit's CWD record gives it. */
static __always_inline void capture_cwd(struct exe_path *out, void *task)
{
	void *fs = read_ptr(task, OFF_TASK_FS);

	out->len = 0;
	out->depth = 0;
	out->truncated = 0;
	if (fs)
		capture_struct_path(out, fs + OFF_FS_PWD);
}

/* The executable's inode and device; zeros for a task without one. */
static __always_inline void exe_identity(struct exe_id *x, void *task)
{
	void *file = exe_file(task);
	void *inode = file ? read_ptr(file, OFF_FILE_F_INODE) : 0;

	x->ino = 0;
	x->dev = 0;
	if (!inode)
		return;
	READ_KERNEL(x->ino, inode, OFF_INODE_I_INO);
	x->dev = inode_dev(inode);
}

#endif
