"""`audtrace compare` on real incidents: the pairing is right, the differences are real.

The truth each claim is checked against: which processes made which syscalls (the actors
report their pids), what kernel audit wrote (the merged stream in -o, read back), and which
task has no audit context (made so with a `never,task` audit rule for a uid: a process
forked by that uid gets no context, so kernel audit cannot record it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from audtrace.compat.record import parse_line, split_fields
from helpers import REPO, wait_for

pytestmark = pytest.mark.kernel

ACTOR = Path(__file__).with_name("bind_actor.py")
NOCTX_UID = 54321
# a process of uid NOCTX_UID forks the binder: the fork is what the task rule judges
NOCTX = r"""
import os, socket, sys
uid = int(sys.argv[1]); os.setgid(uid); os.setuid(uid)
pid = os.fork()
if pid == 0:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); os._exit(0)
os.waitpid(pid, 0); print(pid, flush=True)
"""


def run_actor(log: Path, *args: str) -> dict:
    """A conflict; actor and holder stay until the actor's eBPF bind event is in the log."""
    p = subprocess.Popen([sys.executable, str(ACTOR), *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "BIND_ACTOR_LINGER": "stdin",
                              "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        d = json.loads(p.stdout.readline())
        wait_for(lambda: log.exists() and any(
            f"pid={d['pid']} " in ln and "src=ebpf" in ln and "syscall=49" in ln
            for ln in log.read_text().splitlines()), 20)
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    return d


class Compare:
    """`audtrace compare ... --format json -o LOG`, stdout kept."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.proc = subprocess.Popen(
            [str(REPO / "audtrace"), "compare", *args, "--format", "json", "-o", str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.stderr: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(90) or self.proc.poll() is not None:
            self.proc.kill()
            pytest.fail("compare did not start:\n" + "\n".join(self.stderr))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if line.startswith("audtrace: tracing"):
                self.ready.set()
        self.ready.set()

    def finish(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, self.stderr
        return json.loads(out)


@pytest.fixture
def compare(tmp_path):
    started = []

    def start(args: list[str], log: Path) -> Compare:
        c = Compare(args, log)
        started.append(c)
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def rows_of(result: dict, pid: int) -> list[dict]:
    return [r for r in result["rows"] if r["pid"] == pid]


def audit_syscalls(log: Path, pid: int) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        _n, rtype, _s, _m, _serial, body = parse_line(line)
        f = dict(split_fields(body))
        if rtype == "SYSCALL" and f.get("pid") == str(pid) and f.get("src") != "ebpf":
            out.append(f)
    return out


@pytest.fixture
def no_context_rule():
    rule = ["never,task", "-F", f"uid={NOCTX_UID}"]
    subprocess.run(["auditctl", "-a", *rule], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["auditctl", "-d", *rule], check=True, capture_output=True)


def test_compare_bind(compare, tmp_path, no_context_rule):
    log = tmp_path / "merged.log"
    c = compare(["bind"], log)
    tcp = run_actor(log, "conflict", "tcp", "127.0.0.1")
    udp = run_actor(log, "conflict", "udp", "::1", "--reuse")  # shares the port: success
    noctx = int(
        subprocess.run(
            [sys.executable, "-c", NOCTX, str(NOCTX_UID)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    )
    assert wait_for(lambda: audit_syscalls(log, tcp["pid"]) and audit_syscalls(log, udp["pid"]), 20)
    result = c.finish()
    assert tcp["errno"] == 98 and udp["errno"] == 0

    # each actor's bind: one row, paired, both stamps within a tick, no field differs
    for d in (tcp, udp):
        (row,) = rows_of(result, d["pid"])
        assert row["kind"] == "pair" and 0 <= row["delta_ms"] <= 20, row
        assert row["exit"] == str(-d["errno"])
        assert all(not rd["differ"] for rd in row["records"]), row["records"]
        assert [rd["type"] for rd in row["records"]] == ["SYSCALL", "SOCKADDR", "PROCTITLE"]
    # the holder: a record only eBPF has, naming the holder process
    (row,) = rows_of(result, tcp["pid"])
    only = row["records_only_ebpf"]
    assert [t for t, _ in only] == ["OBJ_PID"] and f"opid={tcp['holder']} " in only[0][1]
    (row,) = rows_of(result, udp["pid"])
    assert row["records_only_ebpf"] == []
    # the process without audit context: only eBPF saw it, and the reason says why
    (row,) = rows_of(result, noctx)
    assert row["kind"] == "ebpf-only" and "no audit context" in row["reason"]
    assert audit_syscalls(log, noctx) == []
    # the merged stream went to -o: both sources, read by ausearch
    both = subprocess.run(
        ["ausearch", "-if", str(log), "-p", str(tcp["pid"]), "-sc", "bind"],
        capture_output=True,
        text=True,
    ).stdout
    assert both.count("type=SYSCALL") == 2 and both.count("src=ebpf") >= 3


def test_compare_kill_table(tmp_path):
    """The table, for kill: the same signal seen by both, on one line."""
    log = tmp_path / "k.log"
    proc = subprocess.Popen(
        [
            str(REPO / "audtrace"),
            "compare",
            "kill",
            "--sig",
            "USR1",
            "-o",
            str(log),
            "--duration",
            "25",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    err: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            err.append(line)
            if line.startswith("audtrace: tracing"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(90), err
    target = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time;signal.signal(signal.SIGUSR1, signal.SIG_IGN); time.sleep(30)",
        ]
    )
    try:
        import time

        time.sleep(0.3)
        sender = subprocess.run(
            [sys.executable, "-c", f"import os; os.kill({target.pid}, 10);print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        sender_pid = int(sender.stdout)
        assert wait_for(
            lambda: (
                log.exists()
                and f"pid={sender_pid} " in log.read_text()
                and log.read_text().count(f"pid={sender_pid} ") >= 2
            ),
            20,
        )
    finally:
        target.kill()
        target.wait()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    line = next(ln for ln in out.splitlines() if f" {sender_pid} " in ln)
    assert " kill " in line and "both (" in line and "0 differ" in line, out
