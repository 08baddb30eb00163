/* The benchmark's load, compiled at run time (tests/bench/harness.py builds it with cc -O2).
 *
 *   loop calls MODE N REPS   time REPS blocks of N calls; print "WALL CPU" ns/call per block
 *                            MODE: getppid      untraced syscall
 *                                  kill0        kill(self, 0): traced, no filter matches
 *                                  killsig      kill(self, SIGUSR2), ignored: traced, matches
 *   loop storm PID SIG RATE SECONDS
 *                            send SIG to PID at RATE per second for SECONDS; print
 *                            "sent N errors E seconds S user U sys Y"
 *   loop target              ignore SIGUSR2 and wait to be killed (the storm's target)
 *
 * Plain C and raw syscalls so the measured cost is the kernel's, not an interpreter's.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

static double tv(struct timeval t)
{
	return t.tv_sec + t.tv_usec / 1e6;
}

static int calls(const char *mode, long n, int reps)
{
	pid_t self = getpid();
	int sig;

	if (!strcmp(mode, "getppid"))
		sig = -1;
	else if (!strcmp(mode, "kill0"))
		sig = 0;
	else if (!strcmp(mode, "killsig"))
		sig = SIGUSR2;
	else
		return fprintf(stderr, "unknown mode %s\n", mode), 2;
	signal(SIGUSR2, SIG_IGN);
	/* warm-up: fault in the code path and let the CPU settle */
	for (long i = 0; i < n / 10; i++)
		sig < 0 ? syscall(SYS_getppid) : syscall(SYS_kill, self, sig);
	for (int r = 0; r < reps; r++) {
		double t0 = now(), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);

		if (sig < 0)
			for (long i = 0; i < n; i++)
				syscall(SYS_getppid);
		else
			for (long i = 0; i < n; i++)
				syscall(SYS_kill, self, sig);
		/* wall time includes waits (audit's backlog) and other tasks' turns on a
		 * shared machine; CPU time is what the calls themselves cost, kernel side included */
		printf("%.2f %.2f\n", (now() - t0) * 1e9 / n,
		       (clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e9 / n);
	}
	return 0;
}

static int storm(pid_t pid, int sig, double rate, double seconds)
{
	long sent = 0, errors = 0;
	double t0 = now(), t;
	struct rusage ru;

	/* rate 0: back to back, as fast as the kernel lets this task send */
	if (rate <= 0) {
		while (now() - t0 < seconds)
			for (int i = 0; i < 256; i++, sent++)
				if (syscall(SYS_kill, pid, sig) != 0)
					errors++;
	}
	/* paced by the clock: after each 1 ms nap, send what the rate owes by now */
	while (rate > 0 && (t = now() - t0) < seconds) {
		long owed = (long)(t * rate) - sent;

		for (long i = 0; i < owed; i++) {
			if (syscall(SYS_kill, pid, sig) != 0)
				errors++;
			sent++;
		}
		struct timespec nap = {0, 1000000};
		nanosleep(&nap, NULL);
	}
	t = now() - t0;
	getrusage(RUSAGE_SELF, &ru);
	printf("sent %ld errors %ld seconds %.6f user %.6f sys %.6f\n", sent, errors, t,
	       tv(ru.ru_utime), tv(ru.ru_stime));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 5 && !strcmp(argv[1], "calls"))
		return calls(argv[2], atol(argv[3]), atoi(argv[4]));
	if (argc == 6 && !strcmp(argv[1], "storm"))
		return storm(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), atof(argv[5]));
	if (argc == 2 && !strcmp(argv[1], "target")) {
		signal(SIGUSR2, SIG_IGN);
		printf("ready\n");
		for (;;)
			pause();
	}
	fprintf(stderr, "usage: loop calls MODE N REPS | storm PID SIG RATE|0 SECONDS | target\n");
	return 2;
}
