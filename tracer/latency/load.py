"""The built-in load of `audtrace latency --audit-cost --load`: a process of its own calling
the timed syscalls in a loop, each in a way that changes nothing (its own pid signalled with
0, /dev/null read and written...), until audtrace stops it or is gone.

    python -m audtrace.tracer.latency.load PARENT_PID SYSCALL...
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1
COMM = b"audtrace-load"


def _null_rw() -> tuple[Callable[[], object], Callable[[], object]]:
    fd = os.open("/dev/null", os.O_RDWR)
    return (lambda: os.read(fd, 1)), (lambda: os.write(fd, b"x"))


def _open_close() -> None:
    os.close(os.open("/dev/null", os.O_RDONLY))


def calls() -> dict[str, Callable[[], object]]:
    """syscall name -> a harmless call that makes it (CPython and glibc call the kernel
    every time for each of these)."""
    read, write = _null_rw()
    me = os.getpid()
    return {
        "getppid": os.getppid, "getpid": os.getpid, "getuid": os.getuid,
        "geteuid": os.geteuid, "getgid": os.getgid, "getegid": os.getegid,
        "uname": os.uname, "getcwd": os.getcwd, "kill": lambda: os.kill(me, 0),
        "newfstatat": lambda: os.stat("/"), "openat": _open_close, "close": _open_close,
        "read": read, "write": write,
    }


NAMES = ("getppid", "getpid", "getuid", "geteuid", "getgid", "getegid", "uname", "getcwd",
         "kill", "newfstatat", "openat", "close", "read", "write")


def main(argv: list[str]) -> int:
    parent, names = int(argv[0]), argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, COMM, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)    # SIGKILL when audtrace is gone
    if os.getppid() != parent:                   # it went before the line above
        return 1
    table = calls()
    loop = [table[n] for n in names]
    while True:
        for call in loop:
            call()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
