"""Changes the time without changing it, from a fresh process; prints what it did as JSON.

`set`: clock_settime(CLOCK_REALTIME) and settimeofday to the time it is anyway, computed
from CLOCK_MONOTONIC just before the call (the clock loses the microsecond or so the call
itself takes), then adjtimex(ADJ_TICK) with the tick it already has (a modifying call that
changes nothing), an adjtimex read (modes 0), and failures: clock_settime with nsec out of
range (EINVAL), to a NULL pointer (EFAULT), and RTC_SET_TIME on a regular file (ENOTTY).
`nobody`: clock_settime as an unprivileged user (EPERM).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
ADJ_TICK = 0x4000


class Timex(ctypes.Structure):
    # struct __kernel_timex on 64-bit: modes, then 8-byte fields; time at 72, tick at 88
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("_p0", ctypes.c_int),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_p1", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("_rest", ctypes.c_long * 20),
    ]


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


def call(fn, *args) -> int:
    r = fn(*args)
    return -ctypes.get_errno() if r < 0 else r


def now_by_monotonic(base: tuple[int, int]) -> int:
    real0, mono0 = base
    return real0 + time.clock_gettime_ns(time.CLOCK_MONOTONIC) - mono0


out: dict = {"pid": os.getpid(), "ret": {}}
if sys.argv[1] == "set":
    base = (time.clock_gettime_ns(time.CLOCK_REALTIME), time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    t = now_by_monotonic(base)
    ts = Timespec(t // 10**9, t % 10**9)
    out["ret"]["clock_settime"] = call(libc.clock_settime, 0, ctypes.byref(ts))
    out["asked"] = t
    t = now_by_monotonic(base)
    tv = Timespec(t // 10**9, t % 10**9 // 1000)  # struct timeval: usec
    # the syscall itself: glibc's settimeofday() calls clock_settime
    out["ret"]["settimeofday"] = call(libc.syscall, 164, ctypes.byref(tv), None)
    read = Timex()
    out["ret"]["adjtimex_read"] = call(libc.adjtimex, ctypes.byref(read))
    same = Timex(modes=ADJ_TICK, tick=read.tick)
    out["ret"]["adjtimex_tick"] = call(libc.adjtimex, ctypes.byref(same))
    out["tick"] = read.tick
    # raw syscalls: glibc refuses a bad nsec itself, before any syscall
    out["ret"]["einval"] = call(libc.syscall, 227, 0, ctypes.byref(Timespec(1, 2 * 10**9)))
    out["ret"]["efault"] = call(libc.syscall, 227, 0, None)  # clock_settime(0, NULL)
    fd = os.open("/etc/hostname", os.O_RDONLY)
    rtc = (ctypes.c_int * 9)(0, 0, 12, 1, 0, 126, 0, 0, 0)  # 2026-01-01T12:00:00
    out["ret"]["rtc"] = call(libc.ioctl, fd, ctypes.c_ulong(0x4024700A), ctypes.byref(rtc))
else:
    t = time.clock_gettime_ns(time.CLOCK_REALTIME)
    out["ret"]["eperm"] = call(libc.syscall, 227, 0, ctypes.byref(Timespec(t // 10**9, 0)))
print(json.dumps(out))
