/* 32-bit syscalls for the rules tests (test_rules_compat.py). Built twice:
 *   cc -m32 compat32.c         a 32-bit program: its calls take the i386 table
 *   cc -DINT80 compat32.c      a 64-bit program making i386 calls by `int $0x80` (the task
 *                              is in a 32-bit call although its code segment is 64-bit)
 * Prints its pid, then makes each call once: kill(self, SIGTERM) (ignored), getpgid of a
 * pid that does not exist, and i386 call 39 (mkdir, of an address past the 32-bit user
 * space: EFAULT; x86_64's getpid has that number).
 */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#define I386_KILL 37
#define I386_MKDIR 39
#define I386_GETPGID 132
#define NO_SUCH_PID 0x7ffff123
#define NO_SUCH_ADDRESS 0xfffff124

static long call32(long nr, long a0, long a1)
{
#if defined(INT80)
	long ret;

	asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a0), "c"(a1) : "memory");
	return ret;
#else
	return syscall(nr, a0, a1);
#endif
}

int main(void)
{
	pid_t self = getpid();

	signal(SIGTERM, SIG_IGN);
	printf("%d\n", (int)self);
	fflush(stdout);
	call32(I386_KILL, self, SIGTERM);
	call32(I386_GETPGID, NO_SUCH_PID, 0);
	call32(I386_MKDIR, NO_SUCH_ADDRESS, 0);
#if defined(INT80)
	kill(self, SIGTERM);            /* and one native kill */
#endif
	return 0;
}
