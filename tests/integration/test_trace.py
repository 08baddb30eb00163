"""`audtrace trace -- CMD`: every syscall of CMD and its descendants, nothing from outside.

The traced command is a shell script that forks (subshell, background job) and execs
(/bin/sh -c, /bin/true), printing the pid of each process. Completeness is checked against
kernel audit itself: the script runs under a login uid of its own, and a kernel rule
`-S all -F auid=N` (added here, removed after) records every syscall of that tree.
"""

from __future__ import annotations

import collections
import os
import select
import shutil
import subprocess
import sys
import threading
import time

import pytest
from audtrace.compat.record import parse_line, parse_netlink, split_fields
from audtrace.tracer.audit.netlink import AuditReader
from helpers import REPO

pytestmark = pytest.mark.kernel

SCRIPT = """#!/bin/bash
echo "pid $$"
( echo "pid $BASHPID"; exec /bin/true )
/bin/sh -c 'echo "pid $$"; exit 0'
sleep 0.05 &
echo "pid $!"
wait
exit 7
"""
# sets its own login uid (so kernel audit can single out the tree), then becomes the script
WRAPPER = (
    "import os, sys; open('/proc/self/loginuid', 'w').write(sys.argv[1]); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def auditctl(*args: str) -> str:
    return subprocess.run(
        ["auditctl", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def syscalls(text: str, ebpf: bool) -> dict[int, list[tuple[tuple, int, bool]]]:
    """pid -> [(stamp, syscall number, succeeded)] of the SYSCALL records of one source."""
    out: dict[int, list] = collections.defaultdict(list)
    for line in text.splitlines():
        if not line.startswith("type=SYSCALL"):
            continue
        _n, _t, sec, msec, serial, body = parse_line(line)
        f = dict(split_fields(body))
        if (f.get("src") == "ebpf") == ebpf:
            out[int(f["pid"])].append(((sec, msec, serial), int(f["syscall"]),
                                       f.get("success") == "yes"))
    return out


def after_exec(calls: list[tuple[tuple, int, bool]], execve: int = 59) -> collections.Counter:
    """The calls from the last successful execve on (before it: audtrace's start of CMD, the
    wrapper, the shell's failed tries along PATH, whose stamps the two clocks may order
    differently around a tick)."""
    calls = sorted(calls)
    last = max((i for i, (_s, nr, ok) in enumerate(calls) if nr == execve and ok), default=0)
    return collections.Counter(nr for _s, nr, _ok in calls[last:])


def test_trace_follows_the_tree(tmp_path):
    script = tmp_path / "tree.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    auid = str(420000 + os.getpid() % 10000)
    rule = [
        "-a",
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "all",
        "-F",
        f"auid={auid}",
        "-k",
        "audtrace-trace-test",
    ]
    log = tmp_path / "trace.log"
    was = next(ln.split()[1] for ln in auditctl("-s").splitlines() if ln.startswith("enabled"))
    # a process outside the tree, busy with syscalls the whole time
    noise = subprocess.Popen(
        [sys.executable, "-c", "import os, time\nwhile True: os.getppid(); time.sleep(0.001)"]
    )
    # the kernel's record of the same tree, read from the audit multicast group
    reader, lines, done = AuditReader(), [], threading.Event()

    def read() -> None:
        while not done.is_set():
            select.select([reader], [], [], 0.1)
            for mtype, text in reader.recv_records():
                if mtype == 1300:
                    sec, msec, serial, body = parse_netlink(mtype, text)
                    lines.append(f"type=SYSCALL msg=audit({sec}.{msec:03d}:{serial}): {body}")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        auditctl(*rule)
        if was == "0":
            auditctl("-e", "1")
        out = subprocess.run(
            [
                str(REPO / "audtrace"),
                "trace",
                "-o",
                str(log),
                "--",
                sys.executable,
                "-c",
                WRAPPER,
                auid,
                str(script),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        time.sleep(1.0)
    finally:
        subprocess.run(["auditctl", "-d", *rule[1:]], capture_output=True)
        if was == "0":
            subprocess.run(["auditctl", "-e", "0"], capture_output=True)
        done.set()
        thread.join(timeout=10)
        reader.close()
        noise.kill()
        noise.wait()
    assert out.returncode == 7, out.stderr  # the script's exit status
    printed = {int(ln.split()[1]) for ln in out.stdout.splitlines() if ln.startswith("pid ")}
    assert len(printed) == 4
    ebpf = syscalls(log.read_text(), ebpf=True)
    # nothing from outside the tree, every process of it
    assert set(ebpf) == printed, (sorted(ebpf), sorted(printed))
    assert noise.pid not in ebpf
    kernel = syscalls("\n".join(lines), ebpf=False)
    for pid in printed:
        assert kernel.get(pid), f"kernel audit saw nothing of pid {pid}"
        assert after_exec(ebpf[pid]) == after_exec(kernel[pid]), pid
    exits = {pid for pid, calls in ebpf.items() if any(nr == 231 for _s, nr, _ok in calls)}
    assert exits == printed  # every process's exit_group, written at entry
    if shutil.which("ausearch"):  # the log reads as audit's: by pid and by syscall
        for pid in printed:
            r = subprocess.run(
                ["ausearch", "-if", str(log), "-p", str(pid), "-sc", "exit_group"],
                capture_output=True,
                text=True,
            )
            assert r.stdout.count("type=SYSCALL") == 1, (pid, r.stderr)
