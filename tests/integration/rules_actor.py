"""Does one thing an audit rule of the tests matches, from a fresh process; says what, as JSON.

Run as `python3 rules_actor.py ACTION [ARG] [--loginuid N]`. Every action touches only what
this process creates (a sleep it starts, its own sockets, files under ARG). Started after
tracing is live, so kernel audit has an audit context for it. Prints
{"events": [[pid, syscall name], ...]} for the calls the rules should report.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)


def main(argv: list[str]) -> int:
    action, arg = argv[0], (argv[1] if len(argv) > 1 and not argv[1].startswith("--") else "")
    if "--loginuid" in argv:
        with open("/proc/self/loginuid", "w") as f:
            f.write(argv[argv.index("--loginuid") + 1])
    me = os.getpid()
    out: list[tuple[int, str]] = []
    if action == "kill":
        child = subprocess.Popen(["sleep", "30"])
        os.kill(child.pid, 15)
        child.wait()
        out.append((me, "kill"))
    elif action == "bind":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
        out.append((me, "bind"))
    elif action == "net":
        with socket.socket() as srv, socket.socket() as cli:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            cli.connect(srv.getsockname())
            conn, _ = srv.accept()
            conn.close()
        out += [(me, "connect"), (me, "accept4")]
    elif action == "exec":  # run ARG (a program); its exit_group is the event
        child = subprocess.Popen([arg])
        child.wait()
        out.append((child.pid, "exit_group"))
    elif action == "setuid":  # run ARG (a setuid-root copy) as nobody
        child = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", arg],
            stdout=subprocess.DEVNULL,
        )
        child.wait()
        out.append((child.pid, "execve"))
    elif action == "write":  # write ARG (a watched file)
        with open(arg, "a") as f:
            f.write("x\n")
        out.append((me, "openat"))
    elif action == "adjtimex":  # read the clock state (modes 0 changes nothing)
        from audtrace.compat import tables  # glibc's adjtimex() is clock_adjtime: call it

        buf = ctypes.create_string_buffer(512)
        libc.syscall(tables.syscall_number(tables.host_arch(), "adjtimex"), buf)
        out.append((me, "adjtimex"))
    elif action == "mount":  # a mount that fails: nothing is mounted
        libc.mount(b"none", (arg + "/no-such-dir").encode(), b"tmpfs", 0, None)
        out.append((me, "mount"))
    elif action == "getpgid-groups":  # the same, with supplementary groups 4241..4243
        os.setgroups([4241, 4242, 4243])
        with contextlib.suppress(ProcessLookupError):
            os.getpgid(int(arg))
        out.append((me, "getpgid"))
    elif action == "getpgid":  # of a pid that does not exist: ESRCH
        with contextlib.suppress(ProcessLookupError):
            os.getpgid(int(arg))
        out.append((me, "getpgid"))
    elif action == "chmod":
        os.chmod(arg, 0o640)
        out.append((me, "chmod"))
    elif action == "unlink":  # a file it creates under ARG, then removes
        path = os.path.join(arg, f"unlink-{me}")
        open(path, "w").close()
        os.unlink(path)
        out.append((me, "unlink"))
    else:
        print(f"unknown action {action}", file=sys.stderr)
        return 2
    print(json.dumps({"events": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
