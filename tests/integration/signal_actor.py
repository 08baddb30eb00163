"""Sends one signal by one syscall from a fresh process, and says what it did as JSON.

Run as `python3 signal_actor.py ACTION SIG [--uid N] [--loginuid N] [--gone]`. The target is
a `sleep` this process starts itself, so nothing outside the test is ever signalled. Started
after tracing is live, so kernel audit has an audit context for it. --gone: the target is
reaped before the send.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297}
SI_QUEUE = -1


def siginfo(sig: int) -> ctypes.Array:
    """A 128-byte siginfo_t for sigqueue: signo, errno, code, then pid and uid."""
    buf = (ctypes.c_int * 32)()
    buf[0], buf[1], buf[2] = sig, 0, SI_QUEUE
    buf[4], buf[5] = os.getpid(), os.getuid()
    return buf


def send(action: str, sig: int, target: subprocess.Popen) -> int:
    pid = target.pid
    if action == "kill":
        os.kill(pid, sig)
        return 0
    if action == "pidfd_send_signal":
        fd = os.pidfd_open(pid)
        signal.pidfd_send_signal(fd, sig)
        os.close(fd)
        return 0
    if action == "tkill":
        r = libc.syscall(NR["tkill"], pid, sig)
    elif action == "tgkill":
        r = libc.syscall(NR["tgkill"], pid, pid, sig)
    elif action == "rt_sigqueueinfo":
        r = libc.syscall(NR["rt_sigqueueinfo"], pid, sig, ctypes.byref(siginfo(sig)))
    elif action == "rt_tgsigqueueinfo":
        r = libc.syscall(NR["rt_tgsigqueueinfo"], pid, pid, sig, ctypes.byref(siginfo(sig)))
    else:
        raise SystemExit(f"unknown action {action}")
    return 0 if r == 0 else -ctypes.get_errno()


def main() -> None:
    action, sig = sys.argv[1], int(sys.argv[2])
    flags = {"--gone"} & set(sys.argv[3:])
    rest = [a for a in sys.argv[3:] if a not in flags]
    opts = dict(zip(rest[::2], rest[1::2], strict=True)) | dict.fromkeys(flags, "")
    if "--loginuid" in opts:
        # a login: the kernel assigns a new session id with the login uid
        with open("/proc/self/loginuid", "w") as f:
            f.write(opts["--loginuid"])
    target = subprocess.Popen(["sleep", "30"])
    time.sleep(0.05)
    if "--gone" in opts:
        # a pid that was just reaped: the send finds nothing (ESRCH)
        target.kill()
        target.wait()
    if "--uid" in opts:
        # keep saved uid 0 so the target can be cleaned up afterwards
        os.setresuid(int(opts["--uid"]), int(opts["--uid"]), 0)
    try:
        ret = send(action, sig, target)
    except OSError as e:
        ret = -e.errno
    print(json.dumps({"pid": os.getpid(), "target": target.pid, "action": action,
                      "sig": sig, "ret": ret}), flush=True)
    if "--uid" in opts:
        os.setresuid(0, 0, 0)
    if ret != 0:
        target.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        target.wait(timeout=5)


if __name__ == "__main__":
    main()
