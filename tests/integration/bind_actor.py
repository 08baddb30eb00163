"""Make a real bind conflict, in a fresh process; print what happened as one JSON line.

    bind_actor.py conflict PROTO ADDR [--reuse] [--reuseport] [--hold-reuse]
        a holder process (a child) binds ADDR:port (TCP listens), then this process binds
        the same address and port and reports the errno; both stay until stdin closes
        (BIND_ACTOR_LINGER=stdin) or BIND_ACTOR_LINGER seconds (default 0.5)
    bind_actor.py bind PROTO ADDR PORT: one bind, report the errno

Output: {"pid", "holder", "port", "errno", "proto", "addr", "fd"}.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time

HOLD = r"""
import socket, sys
proto, addr, reuse, reuseport = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
if reuse: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if reuseport: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((addr, 0))
if proto == "tcp": s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def _sock(proto: str, addr: str) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)


def try_bind(proto: str, addr: str, port: int, reuse: bool, reuseport: bool) -> tuple[int, int]:
    s = _sock(proto, addr)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((addr, port))
        err = 0
    except OSError as e:
        err = e.errno or -1
    fd = s.detach()
    return err, fd


def main(argv: list[str]) -> int:
    action, proto, addr = argv[0], argv[1], argv[2]
    flags = set(argv[3:])
    reuse, reuseport = "--reuse" in flags, "--reuseport" in flags
    if action == "bind":
        port = int(argv[3])
        err, fd = try_bind(proto, addr, port, reuse, reuseport)
        print(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "port": port,
                    "errno": err,
                    "fd": fd,
                    "proto": proto,
                    "addr": addr,
                }
            ),
            flush=True,
        )
        return 0
    hold_flags = ["1" if "--hold-reuse" in flags or reuse else "0", "1" if reuseport else "0"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, proto, addr, *hold_flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(holder.stdout.readline())
    err, fd = try_bind(proto, addr, port, reuse, reuseport)
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "holder": holder.pid,
                "port": port,
                "errno": err,
                "fd": fd,
                "proto": proto,
                "addr": addr,
                "eaddrinuse": err == errno.EADDRINUSE,
            }
        ),
        flush=True,
    )
    # stay so a lookup can still find this process's namespace and the holder: until stdin
    # closes when asked (the test knows when the event is written), else a moment
    if os.environ.get("BIND_ACTOR_LINGER") == "stdin":
        sys.stdin.read()
    else:
        time.sleep(float(os.environ.get("BIND_ACTOR_LINGER", "0.5")))
    holder.stdin.close()
    holder.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
