"""A kprobe and a kretprobe fire where the kprobe tests run.

Proof that vagrant/vm-lane is real: on Debian's stock kernel, BCC attaches a kprobe and a
kretprobe to do_nanosleep, a child process sleeps a known number of times, and both probes
count exactly those calls of that process, each return after its entry and with the return
value 0 of an uninterrupted sleep. On a kernel without kprobes the test is skipped, saying
so (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from audtrace.tracer.ebpf import system

pytestmark = pytest.mark.kprobe

FUNCTION = "do_nanosleep"
SLEEPS, SLEEP_S = 5, 0.02

PROGRAM = r"""
#include <uapi/linux/ptrace.h>

BPF_HASH(entered, u32, u64);        // thread id -> entry time
BPF_ARRAY(counts, u64, 4);          // entries, returns, returns with 0, shortest sleep (ns)

static __always_inline int ours(void)
{
    return (bpf_get_current_pid_tgid() >> 32) == TARGET_TGID;
}

int on_entry(struct pt_regs *ctx)
{
    if (!ours())
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    entered.update(&tid, &now);
    counts.atomic_increment(0);
    return 0;
}

int on_return(struct pt_regs *ctx)
{
    if (!ours())
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    u64 *start = entered.lookup(&tid);
    if (!start)
        return 0;
    u64 took = bpf_ktime_get_ns() - *start;
    entered.delete(&tid);
    counts.atomic_increment(1);
    if (PT_REGS_RC(ctx) == 0)
        counts.atomic_increment(2);
    int k = 3;
    u64 *shortest = counts.lookup(&k);
    if (shortest && (*shortest == 0 || took < *shortest))
        *shortest = took;
    return 0;
}
"""

# Waits for a line on stdin, then sleeps SLEEPS times: nothing before the probes are attached.
SLEEPER = (
    f"import sys, time\nsys.stdin.readline()\nfor _ in range({SLEEPS}): time.sleep({SLEEP_S})\n"
)


def test_kprobe_and_kretprobe_fire() -> None:
    from bcc import BPF

    sleeper = subprocess.Popen([sys.executable, "-c", SLEEPER], stdin=subprocess.PIPE, text=True)
    try:
        tree = system.find_header_tree()
        with system.tracefs_mounted(lambda _m: None), system.header_tree_for_bcc(tree):
            started = time.monotonic()
            b = BPF(text=PROGRAM, cflags=[f"-DTARGET_TGID={sleeper.pid}"])
            try:
                b.attach_kprobe(event=FUNCTION, fn_name="on_entry")
                b.attach_kretprobe(event=FUNCTION, fn_name="on_return")
                print(f"compiled and attached in {time.monotonic() - started:.1f} s")
                sleeper.communicate("go\n", timeout=60)
                assert sleeper.returncode == 0
                counts = [int(v.value) for v in b["counts"].values()]
            finally:
                b.cleanup()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    entries, returns, zero_returns, shortest_ns = counts
    assert entries == SLEEPS, f"kprobe on {FUNCTION} fired {entries} times"
    assert returns == SLEEPS, f"kretprobe on {FUNCTION} fired {returns} times"
    assert zero_returns == SLEEPS, "an uninterrupted nanosleep returns 0"
    # (no bound on the duration: under full emulation the guest's clocks drift apart)
    assert shortest_ns > 0, "the return probe ran before its entry probe"
