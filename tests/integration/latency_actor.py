"""A process whose syscalls the latency tests time: `latency_actor.py COMM PLAN`.

It names itself COMM, prints `ready PID`, waits for a line on stdin (so a tracer started
meanwhile sees none of its start-up), runs PLAN, prints one JSON line with what it measured
around each call, then waits for another line before exiting.

PLAN is `;`-separated steps:
  nanosleep:NS*COUNT        the nanosleep syscall itself (glibc's nanosleep() is clock_nanosleep)
  clock_nanosleep:NS*COUNT  clock_nanosleep(CLOCK_MONOTONIC, 0, ...)
  read:NS*COUNT             a blocking read of a pipe whose writer thread writes NS later
  getppid:BATCH*COUNT       COUNT batches of BATCH getppid calls, 20 ms apart
  exits:COUNT               COUNT children, each touching 32 MiB then calling exit_group
Nothing else it does after `ready` uses those syscalls (waits go through select/futex).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"nanosleep": 35, "clock_nanosleep": 230, "getppid": 110}  # x86_64
PR_SET_NAME = 15
CLOCK_MONOTONIC = 1


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


def timed(call) -> int:
    t0 = time.perf_counter_ns()
    call()
    return time.perf_counter_ns() - t0


def sleeps(name: str, ns: int, count: int) -> list[int]:
    ts = Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
    if name == "nanosleep":

        def call():
            return libc.syscall(NR[name], ctypes.byref(ts), None)
    else:

        def call():
            return libc.syscall(NR[name], CLOCK_MONOTONIC, 0, ctypes.byref(ts), None)

    return [timed(call) for _ in range(count)]


def reads(ns: int, count: int) -> list[int]:
    r, w = os.pipe()
    go = threading.Event()

    def writer() -> None:
        for _ in range(count):
            go.wait()
            go.clear()
            select.select([], [], [], ns / 1e9)
            os.write(w, b"x")

    t = threading.Thread(target=writer)
    t.start()
    out = []
    for _ in range(count):
        go.set()
        out.append(timed(lambda: os.read(r, 1)))
    t.join()
    return out


def getppids(batch: int, count: int) -> list[int]:
    for _ in range(count):
        for _ in range(batch):
            libc.syscall(NR["getppid"])
        select.select([], [], [], 0.02)
    return [batch * count]


def exits(count: int) -> list[int]:
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            buf = bytearray(32 << 20)
            for i in range(0, len(buf), 4096):
                buf[i] = 1
            os._exit(0)
        pids.append(pid)
        os.waitpid(pid, 0)
    return pids


def main() -> None:
    comm, plan = sys.argv[1], sys.argv[2]
    libc.prctl(PR_SET_NAME, comm.encode(), 0, 0, 0)
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    result: dict[str, list[int]] = {}
    for step in plan.split(";"):
        name, _, arg = step.partition(":")
        a, _, b = arg.partition("*")
        if name in ("nanosleep", "clock_nanosleep"):
            result.setdefault(name, []).extend(sleeps(name, int(a), int(b)))
        elif name == "read":
            result.setdefault(name, []).extend(reads(int(a), int(b)))
        elif name == "getppid":
            result[name] = getppids(int(a), int(b))
        elif name == "exits":
            result[name] = exits(int(a))
    print(json.dumps(result), flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
