/* Who does which ioctl on which file.
 *
 * At entry the file behind the fd (a0) is resolved in the kernel through the task's fd
 * table (file_path.h): its inode, device, mode, owner, rdev and path, what audit's PATH
 * record says of a file. Filters: the request (a1) before anything is captured, the file
 * (inode + device, as audit compares watched inodes) once it is known.
 */
#include "file.h"

struct family_extra {
	struct file_info file;
};
/* sent up to the end of the file's path */
#define FAMILY_EXTRA_LEN(ev) (__builtin_offsetof(struct family_extra, file.path.buf) + \
	(ev)->extra.file.path.len)

#include "syscall_event.h"

struct file_key {
	u64 ino;
	u32 dev;
	u32 pad;
};

BPF_HASH(filter_request, u32, u8, 64);
BPF_HASH(filter_file, struct file_key, u8, 16);

static __always_inline int family_want(int nr, const struct sc_call *c)
{
	u32 req;

	if (nr != NR_IOCTL)
		return 0;
	req = (u32)call_arg(c, 1);
	return !FILTER_REQUEST || filter_request.lookup(&req);
}

static __always_inline int family_enter(struct syscall_event *ev)
{
	struct file_info *fi = &ev->extra.file;
	struct file_key key = {};

	capture_file(fi, fd_file((void *)bpf_get_current_task(), (s64)(s32)ev->args[0]));
	if (!FILTER_FILE)
		return 1;
	if (!fi->present)
		return 0;
	key.ino = fi->ino;
	key.dev = fi->dev;
	return filter_file.lookup(&key) != 0;
}

static __always_inline int family_exit(void *ctx, struct syscall_event *ev)
{
	return 1;
}

#include "syscall_programs.h"
