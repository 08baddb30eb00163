"""What the benchmark runs and measures: the C load, audtrace, a private auditd, audit state.

Kernel audit state is global: every change is made through the real `auditctl`, remembered
before it is made, and undone in `finally` (the rules this benchmark added, the enabled flag,
the backlog limit); auditd runs with a private configuration and log in a temporary
directory, is told not to touch the enabled flag (`-s nochange`), and is stopped after.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AUDTRACE = REPO / "audtrace"
LOOP_C = Path(__file__).with_name("loop.c")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# seconds a tracer has to say it is tracing: the tests' setting (under emulation, in the
# stock-kernel lane, a BCC compile takes minutes)
START_TIMEOUT = float(os.environ.get("AUDTRACE_TEST_START_TIMEOUT", "120"))


def build_loop(workdir: Path) -> Path:
    """Compile loop.c (at run time: the load must be native code, not an interpreter)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler: apt-get install gcc")
    out = workdir / "loop"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(LOOP_C)], check=True)
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (or kernel thread) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_hwm_mib(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def kthread_pid(name: str) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if f"({name})" in stat.read_text():
                return int(stat.parent.name)
    return None


# ---- audtrace ------------------------------------------------------------------------------


@dataclass
class Audtrace:
    """A running `./audtrace ...`, started and waited for its `audtrace: tracing` line."""

    proc: subprocess.Popen
    output: Path
    startup: float  # seconds from exec to the tracing line
    stderr: list[str] = field(default_factory=list)
    cpu_at_ready: float = 0.0
    hwm_mib: float = 0.0  # VmHWM just before the stop
    rusage: object = None  # resource.struct_rusage once stopped
    reader: threading.Thread | None = None

    def _reap(self) -> bool:
        """Collect the exit status and the rusage once the process is gone (never through
        Popen.poll, which would reap it and lose the rusage)."""
        if self.rusage is not None:
            return True
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = ru
        return True

    def running(self) -> bool:
        return not self._reap()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120) -> None:
        if not self._reap():
            self.hwm_mib = vm_hwm_mib(self.proc.pid)
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while not self._reap():
            if time.monotonic() > deadline:
                self.proc.kill()
                deadline = float("inf")
            time.sleep(0.02)
        if self.reader is not None:
            self.reader.join(timeout=5)

    @property
    def cpu_total(self) -> float:
        ru = self.rusage
        return ru.ru_utime + ru.ru_stime if ru is not None else cpu_seconds(self.proc.pid)

    @property
    def peak_rss_mib(self) -> float:
        """The process's own peak (VmHWM) up to the stop. Not wait4's ru_maxrss: after a
        vfork+exec that also counts the parent's resident set, here the benchmark's."""
        return self.hwm_mib

    def summary_lost(self) -> int | None:
        """The loss totals of audtrace's exit summary line, summed."""
        for line in reversed(self.stderr):
            m = re.search(r"lost: ebpf (\d+), audit (\d+)", line)
            if m:
                return int(m.group(1)) + int(m.group(2))
        return None


def start_tool(cmd: list[str], ready: str, timeout: float = START_TIMEOUT) -> Audtrace:
    """Start a tracer and return once a stderr or stdout line starts with `ready`."""
    t0 = time.monotonic()
    # bcc's tools are Python and print their ready line without a flush: unbuffered, or the
    # line waits in a pipe buffer until they exit
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    tr = Audtrace(proc, Path(cmd[-1]), 0.0)
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tr.stderr.append(line.rstrip("\n"))
            if line.startswith(ready) and not seen.is_set():
                tr.startup = time.monotonic() - t0
                seen.set()
        seen.set()

    tr.reader = threading.Thread(target=read, daemon=True)
    tr.reader.start()
    # the line must have come, from a process still running (EOF also wakes the wait)
    if not seen.wait(timeout) or not tr.startup or not tr.running():
        tr.stop(signal.SIGKILL)
        raise RuntimeError(f"{' '.join(cmd)} did not start:\n" + "\n".join(tr.stderr[-20:]))
    tr.cpu_at_ready = cpu_seconds(proc.pid)
    return tr


def start_audtrace(args: list[str], output: Path, timeout: float = START_TIMEOUT) -> Audtrace:
    """`./audtrace ARGS -o OUTPUT`, once it says `audtrace: tracing`. (With -o, stdout carries
    nothing of the log; a subcommand that runs a command, like trace, passes it on.)"""
    if "--" in args:  # options before the command that follows `--`
        i = args.index("--")
        cmd = [str(AUDTRACE), *args[:i], "-o", str(output), *args[i:]]
    else:
        cmd = [str(AUDTRACE), *args, "-o", str(output)]
    tr = start_tool(cmd, "audtrace: tracing", timeout)
    tr.output = output
    return tr


@contextlib.contextmanager
def audtrace(args: list[str], output: Path) -> Iterator[Audtrace]:
    tr = start_audtrace(args, output)
    try:
        yield tr
    finally:
        tr.stop()


@contextlib.contextmanager
def tool(cmd: list[str], ready: str) -> Iterator[Audtrace]:
    tr = start_tool(cmd, ready)
    try:
        yield tr
    finally:
        tr.stop()


DEBUGFS = Path("/sys/kernel/debug")


@contextlib.contextmanager
def debugfs_mounted() -> Iterator[None]:
    """debugfs at /sys/kernel/debug for the duration, when it is not mounted there: bcc's
    attach_kprobe(event_re=...) (funclatency) reads its kprobes/blacklist. Unmounted after,
    with the tracefs the kernel automounts under it when that was touched."""
    if os.path.ismount(DEBUGFS):
        yield
        return
    subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=True, timeout=30)
    try:
        yield
    finally:
        if os.path.ismount(DEBUGFS / "tracing"):
            subprocess.run(["umount", str(DEBUGFS / "tracing")], check=False, timeout=30)
        subprocess.run(["umount", str(DEBUGFS)], check=True, timeout=30)


# ---- kernel audit and auditd ----------------------------------------------------------------


def auditctl(*args: str) -> str:
    return subprocess.run(
        ["auditctl", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def audit_status() -> dict[str, int]:
    out = {}
    for line in auditctl("-s").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


AUDITD_CONF = """\
local_events = yes
write_logs = yes
log_file = {log}
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 50
max_log_file = 0
max_log_file_action = IGNORE
num_logs = 1
priority_boost = 4
name_format = NONE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
q_depth = 2000
overflow_action = SYSLOG
max_restarts = 10
plugin_dir = {plugins}
end_of_event_timeout = 2
"""
# Debian's shipped rules (/etc/audit/rules.d/audit.rules) raise the kernel backlog to this
DEBIAN_BACKLOG = 8192


@dataclass
class Auditd:
    pid: int
    log: Path

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


@contextlib.contextmanager
def audit_rules(
    rules: list[str], enable: bool = True, backlog: int | None = None
) -> Iterator[None]:
    """Add `auditctl`-syntax rules (and enable audit, set the backlog limit) for the duration;
    afterwards exactly these rules are deleted and the flag and the limit put back."""
    before = audit_status()
    if before.get("enabled") == 2:
        raise RuntimeError("kernel audit is locked (enabled 2): cannot add benchmark rules")
    added: list[str] = []
    changed_enabled = changed_backlog = False
    try:
        if backlog is not None and before.get("backlog_limit") != backlog:
            changed_backlog = True
            auditctl("-b", str(backlog))
        for rule in rules:
            added.append(rule)
            auditctl(*rule.split())
        if enable and before.get("enabled") == 0:
            changed_enabled = True
            auditctl("-e", "1")
        yield
    finally:
        if changed_enabled:
            auditctl("-e", str(before["enabled"]))
        for rule in reversed(added):
            with contextlib.suppress(subprocess.CalledProcessError):
                auditctl("-d", *rule.split()[1:])
        if changed_backlog:
            auditctl("-b", str(before["backlog_limit"]))


@contextlib.contextmanager
def auditd(workdir: Path, timeout: float = 15) -> Iterator[Auditd]:
    """A real auditd writing RAW records to a private log; it leaves the enabled flag alone."""
    status = audit_status()
    if status.get("pid"):
        raise RuntimeError(
            f"an audit daemon (pid {status['pid']}) is already registered: "
            "the benchmark will not displace it"
        )
    conf = Path(tempfile.mkdtemp(prefix="auditd.", dir=workdir))
    (conf / "plugins.d").mkdir()
    log = conf / "audit.log"
    (conf / "auditd.conf").write_text(AUDITD_CONF.format(log=log, plugins=conf / "plugins.d"))
    (conf / "auditd.conf").chmod(0o600)
    proc = subprocess.Popen(
        ["auditd", "-n", "-s", "nochange", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while audit_status().get("pid") != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.poll() is not None else ""
                raise RuntimeError(f"auditd did not register: {err.strip()}")
            time.sleep(0.05)
        yield Auditd(proc.pid, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def settle(seconds: float = 0.3) -> None:
    """Let kernel threads and the previous condition's stragglers finish."""
    time.sleep(seconds)
