/* What audit's PATH and CWD records say of a file, read in the kernel.
 *
 * A file behind a descriptor: task->files->fdt->fd[n] (the fd table as the kernel keeps it),
 * then its inode (number, device, mode, owner, rdev) and its path, walked by capture_path()
 * (identity.h). The working directory: task->fs->pwd. Offsets from BTF, as everywhere.
 */
#ifndef AUDTRACE_FILE_H
#define AUDTRACE_FILE_H

#include "task.h"

struct file_info {
	u64 ino;
	u32 dev, rdev;          /* kernel dev_t: major << 20 | minor */
	u32 mode, uid, gid;
	u32 present;            /* 0: no file (bad fd, or nothing captured) */
	struct exe_path path;   /* last: sent at its used length */
};

/* The struct file behind descriptor fd of task, or 0. */
static __always_inline void *fd_file(void *task, s64 fd)
{
	void *files = task_ptr(task, OFF_TASK_FILES);
	void *fdt, *arr, *file = 0;
	u32 max = 0;

	if (!files || fd < 0)
		return 0;
	fdt = task_ptr(files, OFF_FILES_FDT);
	if (!fdt)
		return 0;
	READ_KERNEL(max, fdt, OFF_FDT_MAX_FDS);
	if ((u64)fd >= max)
		return 0;
	arr = task_ptr(fdt, OFF_FDT_FD);
	if (!arr)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), arr + fd * sizeof(void *));
	return file;
}

static __always_inline void capture_inode(struct file_info *fi, void *inode)
{
	void *sb;
	u16 mode = 0;
	unsigned long ino = 0;

	fi->present = 0;
	if (!inode)
		return;
	READ_KERNEL(ino, inode, OFF_INODE_I_INO);
	READ_KERNEL(mode, inode, OFF_INODE_I_MODE);
	fi->ino = ino;
	fi->mode = mode;
	fi->uid = task_u32(inode, OFF_INODE_I_UID);
	fi->gid = task_u32(inode, OFF_INODE_I_GID);
	fi->rdev = task_u32(inode, OFF_INODE_I_RDEV);
	sb = task_ptr(inode, OFF_INODE_I_SB);
	fi->dev = sb ? task_u32(sb, OFF_SUPER_S_DEV) : 0;
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
	capture_inode(fi, task_ptr(file, OFF_FILE_F_INODE));
	capture_struct_path(&fi->path, file + OFF_FILE_F_PATH);
}

/* The working directory, as audit's CWD record gives it. */
static __always_inline void capture_cwd(struct exe_path *out, void *task)
{
	void *fs = task_ptr(task, OFF_TASK_FS);

	out->len = 0;
	out->depth = 0;
	out->truncated = 0;
	if (fs)
		capture_struct_path(out, fs + OFF_FS_PWD);
}

#endif
