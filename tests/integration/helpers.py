"""Helpers of the integration tests: run the real `audtrace`, run signal actors."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from audtrace.compat import tables

REPO = Path(__file__).resolve().parents[2]
ACTOR = Path(__file__).with_name("signal_actor.py")
PYTHON = sys.executable


@dataclass
class Tracer:
    proc: subprocess.Popen
    output: Path
    stderr: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def text(self) -> str:
        return self.output.read_text() if self.output.exists() else ""


# BCC compiles for a minute or two under full emulation (the stock-kernel lane raises it)
START_TIMEOUT = float(os.environ.get("AUDTRACE_TEST_START_TIMEOUT", "90"))


def start_audtrace(args: list[str], output: Path, timeout: float = START_TIMEOUT,
                   env: dict[str, str] | None = None) -> Tracer:
    """Start `audtrace ARGS -o OUTPUT` (with `env` added to the environment) and return
    once it says it is tracing."""
    cmd = [str(REPO / "audtrace"), *args, "-o", str(output)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, **(env or {})}
    )
    tracer = Tracer(proc, output)
    tracer._reader = follow_stderr(proc, tracer.stderr, timeout, "audtrace")
    return tracer


def follow_stderr(proc: subprocess.Popen, lines: list[str], timeout: float,
                  what: str) -> threading.Thread:
    """Collect PROC's stderr into LINES from a thread; return it once PROC says it is
    tracing, or fail the test (killing PROC) if it never does."""
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("audtrace: tracing"):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        pytest.fail(f"{what} did not start tracing:\n" + "\n".join(lines))
    return reader


def act(action: str, sig: int, *extra: str) -> dict:
    """Run signal_actor.py in a fresh process; return what it reports."""
    out = subprocess.run(
        [PYTHON, str(ACTOR), action, str(sig), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for(pred, timeout: float = 10.0, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---- the system state audtrace must leave as found ---------------------------------------
# bpf(2) commands: walk the kernel's id tables without bpftool
BPF_PROG_GET_NEXT_ID, BPF_MAP_GET_NEXT_ID = 11, 12

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _NextIdAttr(ctypes.Structure):
    # union bpf_attr, the *_GET_NEXT_ID member; the kernel wants the rest of the union zeroed
    _fields_ = [
        ("start_id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
        ("_pad", ctypes.c_uint8 * 116),
    ]


def bpf_ids(cmd: int = BPF_PROG_GET_NEXT_ID) -> frozenset[int]:
    """Ids of every loaded BPF program (or map, with BPF_MAP_GET_NEXT_ID)."""
    nr = tables.syscall_number(tables.host_arch(), "bpf")
    assert nr is not None, "no bpf syscall on this arch"
    ids, attr = set(), _NextIdAttr()
    while True:
        if _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:  # past the last id
                return frozenset(ids)
            raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
        ids.add(attr.next_id)
        attr.start_id = attr.next_id


def bpf_prog_ids() -> frozenset[int]:
    return bpf_ids(BPF_PROG_GET_NEXT_ID)


def bpf_prog_ids_held(pid: int | str = "[0-9]*") -> frozenset[int]:
    """Program ids behind the open fds of process `pid` (default: every process), from fdinfo."""
    ids = set()
    for info in Path("/proc").glob(f"{pid}/fdinfo/*"):
        try:
            text = info.read_text()
        except OSError:  # the fd or the process went away meanwhile
            continue
        ids.update(
            int(line.split()[1]) for line in text.splitlines() if line.startswith("prog_id:")
        )
    return frozenset(ids)


def leaked_bpf_progs(before: frozenset[int]) -> frozenset[int]:
    """Programs loaded since `before` that no live process holds: nothing will unload them.
    (Programs of other processes running beside, e.g. a parallel test, are not leaks.)"""
    orphans = bpf_prog_ids() - before - bpf_prog_ids_held()
    return orphans & bpf_prog_ids()  # still loaded once the scan is over


def tracing_mounts() -> tuple[str, ...]:
    """/proc/self/mounts lines of tracefs and debugfs."""
    with open("/proc/self/mounts") as f:
        return tuple(
            line.rstrip("\n")
            for line in f
            if len(line.split()) > 2 and line.split()[2] in ("tracefs", "debugfs")
        )


def audit_enabled() -> str:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("enabled "))


def audit_rules() -> str:
    return subprocess.run(["auditctl", "-l"], capture_output=True, text=True, check=True).stdout


@dataclass(frozen=True)
class SystemState:
    """What an audtrace run may change while it runs and must put back."""

    mounts: tuple[str, ...]
    audit_enabled: str
    audit_rules: str
    run_dir: bool                                 # /run/audtrace (tracer/audit/journal.py)
    progs: frozenset[int] = field(compare=False)  # compared through leaked_bpf_progs()


def system_state() -> SystemState:
    return SystemState(tracing_mounts(), audit_enabled(), audit_rules(),
                       Path("/run/audtrace").exists(), bpf_prog_ids())


def others_changing_state() -> list[str]:
    """Other processes that change what SystemState holds: audtrace runs (tracefs, BPF,
    audit rules) and auditd (audit rules and flag). Not ours: ours has exited when asked."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"audtrace.tracer.cli" in b" ".join(argv) or Path(argv[0].decode()).name == "auditd":
            found.append(f"{cmdline.parent.name}: {b' '.join(argv)[:120].decode()}")
    return found


def give_new_tasks_audit_contexts() -> None:
    """Make sure kernel audit has been enabled since boot, so processes forked from now on
    have an audit context (the kernel gives none to a task forked before audit was first
    enabled). A test that must start its processes before audtrace (to name their pids)
    calls this first. Enabled and restored through audtrace's own source, no rule added."""
    from audtrace.tracer.audit.source import AuditSource

    with AuditSource([], on_notice=lambda _msg: None, handle_signals=False):
        pass


def waiting_children(n: int, code: str) -> list[subprocess.Popen]:
    """N python children that run CODE once a line arrives on their stdin (see `release`)."""
    return [
        subprocess.Popen([PYTHON, "-c", f"import sys; sys.stdin.readline()\n{code}"],
                         stdin=subprocess.PIPE)
        for _ in range(n)
    ]


def release(children: list[subprocess.Popen]) -> list[int]:
    """Let `waiting_children` go on; their exit statuses."""
    for c in children:
        c.stdin.write(b"\n")
        c.stdin.close()
    return [c.wait(timeout=30) for c in children]


@contextmanager
def ignoring_target(*sigs: int) -> Iterator[int]:
    """The pid of a process that ignores `sigs`, alive for the block: the target of a storm,
    or of `kill --sig`, that stays to be named in every record."""
    names = ", ".join(f"signal.{signal.Signals(s).name}" for s in sigs)
    proc = subprocess.Popen([PYTHON, "-c", f"import signal, sys\nfor s in ({names},):"
                             " signal.signal(s, signal.SIG_IGN)\n"
                             "print(flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def paced_sender(target: int, rate: int, batch: int = 1) -> Iterator[dict]:
    """SIGUSR2 to target from a fresh process at about `rate` a second, `batch` at a time,
    until the block ends; then the dict holds the sender's pid and how many it sent."""
    code = (f"import os, select, sys, time\nsent = 0\nstep = {batch} / {rate}\n"
            "next_t = time.monotonic()\nprint(os.getpid(), flush=True)\n"
            "while not select.select([sys.stdin], [], [], 0)[0]:\n"
            f"    for _ in range({batch}): os.kill({target}, 12)\n"
            f"    sent += {batch}\n"
            "    next_t += step\n"
            "    time.sleep(max(0, next_t - time.monotonic()))\n"
            "print(sent, flush=True)\n")
    proc = subprocess.Popen([PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    out = {"pid": int(proc.stdout.readline())}
    try:
        yield out
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        out["sent"] = int(proc.stdout.readline())
        proc.wait(timeout=30)
