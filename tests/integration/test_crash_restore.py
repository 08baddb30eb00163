"""A run killed with SIGKILL, alone: the next run (any subcommand) or `audtrace cleanup` puts
back exactly what it added to the kernel, and nothing else.

Each test starts from the machine as found (audit on or off, rules or none, tracefs mounted
or not), starts the run alone, waits for `audtrace: tracing`, kills it with SIGKILL, checks
that the kernel is changed (else the test would prove nothing), then runs the next command
and checks the audit flag, the rule list and the tracefs/debugfs mounts against what they
were before, with auditctl and /proc/self/mounts, and that /run/audtrace keeps nothing of
the dead run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import REPO, act, audit_enabled, audit_rules, tracing_mounts, wait_for

pytestmark = pytest.mark.kernel

AUDTRACE = str(REPO / "audtrace")
JOURNAL = Path("/run/audtrace/journal.json")
KEY = f"audtrace-crash-{os.getpid()}"
# test-only switch of tracer/audit/source.py: SIGSTOP right after the first rule is added
STOP_AFTER_FIRST_RULE = "AUDTRACE_TEST_STOP_AFTER_FIRST_RULE"

# the runs of the report, as a user types them (-o and --duration are added)
ROWS = {
    "kill-audit": ["kill", "--sig", "15", "--source", "audit"],
    "kill-both": ["kill", "--sig", "10", "--source", "both"],
    "rules-audit": ["rules", "-a", "always,exit", "-F", "arch=b64", "-S", "unlink", "-k", KEY,
                    "--source", "audit"],
    "bind-both": ["bind", "--failed", "--source", "both"],
}


def kernel_state() -> tuple[str, str, tuple[str, ...]]:
    """(audit enabled flag, `auditctl -l`, tracefs/debugfs mounts)."""
    return audit_enabled(), audit_rules(), tracing_mounts()


def rule_lines(state: tuple[str, str, tuple[str, ...]]) -> list[str]:
    lines = state[1].splitlines()
    return [] if lines == ["No rules"] else lines


def run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([AUDTRACE, *args], capture_output=True, text=True, cwd=REPO,
                          stdin=subprocess.DEVNULL, timeout=120, env=env)


def auditctl(*args: str) -> None:
    subprocess.run(["auditctl", *args], check=True, capture_output=True, timeout=10)


def killed(tracers, args: list[str], log: Path) -> tuple[int, list[str]]:
    """Start `audtrace ARGS` alone, wait for its tracing line, SIGKILL it; (pid, stderr)."""
    t = tracers(args, log)
    t.proc.kill()
    assert t.proc.wait(timeout=30) == -signal.SIGKILL
    t._reader.join(timeout=5)
    return t.proc.pid, t.stderr


def restored_line(pid: int) -> str:
    return f"audtrace: restored what run {pid} (it ended without cleaning up) left: "


def assert_nothing_of(pid: int) -> None:
    text = JOURNAL.read_text() if JOURNAL.exists() else ""
    assert f'"{pid}/' not in text, f"/run/audtrace still holds run {pid}:\n{text}"


@pytest.mark.parametrize("row", list(ROWS))
def test_the_next_run_puts_back_what_a_killed_run_left(row, tracers, tmp_path):
    before = kernel_state()
    pid, _ = killed(tracers, ROWS[row], tmp_path / "killed.log")
    left = kernel_state()
    added = [r for r in rule_lines(left) if r not in rule_lines(before)]
    assert added, f"the killed run left no rule (nothing to test):\n{left[1]}"
    assert left[0] != "0"
    if row == "bind-both":
        assert all(f"pid!={pid}" in r for r in added), added

    r = run([*ROWS[row], "--duration", "2", "-o", str(tmp_path / "next.log")])
    assert r.returncode == 0, r.stderr
    assert restored_line(pid) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert kernel_state() == before
    assert_nothing_of(pid)


def test_cleanup_puts_back_what_a_killed_run_left(tracers, tmp_path):
    before = kernel_state()
    pid, _ = killed(tracers, ROWS["kill-audit"], tmp_path / "killed.log")
    left = kernel_state()
    assert len(rule_lines(left)) == len(rule_lines(before)) + 2 and left[0] != "0"

    dry = run(["cleanup", "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"would restore what run {pid} (it ended without cleaning up)"
                                 " left: remove 2 audit rules"), dry.stdout
    assert kernel_state() == left and f'"{pid}/' in JOURNAL.read_text()

    done = run(["cleanup"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"restored what run {pid} (it ended without cleaning up) left:"
                               " removed 2 audit rules"), done.stdout
    assert ("set audit enabled back to 0" in lines[0]) == (before[0] == "0")
    assert sum(line.startswith("  audit rule -a ") for line in lines) == 2, done.stdout
    assert kernel_state() == before
    assert_nothing_of(pid)

    again = run(["cleanup"])
    assert (again.returncode, again.stdout) == (0, "nothing to undo\n")


@pytest.mark.parametrize("then", ["next-run", "cleanup"])
def test_killed_between_its_first_and_its_last_rule(then, tmp_path):
    before = kernel_state()
    args = [*ROWS["kill-audit"], "-o", str(tmp_path / "x.log")]
    proc = subprocess.Popen([AUDTRACE, *args], cwd=REPO, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ,
                                                            STOP_AFTER_FIRST_RULE: "1"})
    try:
        stopped = wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text()
                           .rsplit(")", 1)[1].split()[0] == "T", timeout=60)
        assert stopped, "the run never stopped after its first rule"
        left = kernel_state()
        # one of its two rules is in, the second not yet
        assert len(rule_lines(left)) == len(rule_lines(before)) + 1, left[1]
    finally:
        proc.kill()
        proc.wait(timeout=30)

    r = run(["cleanup"] if then == "cleanup" else
            [*ROWS["kill-audit"], "--duration", "2", "-o", str(tmp_path / "next.log")])
    assert r.returncode == 0, r.stderr
    report = r.stdout if then == "cleanup" else r.stderr
    assert "removed 1 audit rule" in report, report
    assert kernel_state() == before
    assert_nothing_of(proc.pid)


def test_a_rule_there_before_survives_a_killed_run_and_cleanup(tracers, tmp_path):
    theirs = ["-a", "always,exit", "-F", "arch=b64", "-S", "unlink", "-k", f"{KEY}-theirs"]
    auditctl(*theirs)
    try:
        before = kernel_state()
        args = ["rules", *theirs, "-a", "always,exit", "-F", "arch=b64", "-S", "rmdir",
                "-k", f"{KEY}-mine", "--source", "audit"]
        pid, stderr = killed(tracers, args, tmp_path / "killed.log")
        assert any("audit rule already present, left as is" in line for line in stderr)
        assert f"key={KEY}-mine" in audit_rules()

        r = run(["cleanup"])
        assert r.returncode == 0, r.stderr
        assert "removed 1 audit rule" in r.stdout, r.stdout
        assert kernel_state() == before
        assert f"key={KEY}-theirs" in audit_rules()
        assert_nothing_of(pid)
    finally:
        auditctl("-d", *theirs[1:])


def test_a_live_runs_rules_survive_the_cleanup_of_a_dead_one(tracers, tmp_path):
    """A live run and a run that dies, sharing one rule: the dead run's own rule goes, the
    shared one and the flag stay for the live run, which still gets its records."""
    before = kernel_state()
    live = tracers(["kill", "--sig", "12", "--source", "audit"], tmp_path / "live.log")
    during = kernel_state()
    shared = [r for r in rule_lines(during) if r not in rule_lines(before)][0]
    dead_args = ["rules", *shlex.split(shared), "-a", "always,exit", "-F", "arch=b64",
                 "-S", "rmdir", "-k", KEY, "--source", "audit"]
    pid, _ = killed(tracers, dead_args, tmp_path / "dead.log")
    assert f"key={KEY}" in audit_rules()

    r = run(["cleanup"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"restored what run {pid} (it ended without cleaning up) left:"
                               " removed 1 audit rule\n"), r.stdout
    assert kernel_state() == during
    assert_nothing_of(pid)
    d = act("kill", 12)     # a fresh process: audit has a context for it
    assert wait_for(lambda: f" pid={d['pid']} " in live.text(), 15), live.text()

    assert live.stop() == 0
    assert kernel_state() == before
    assert not JOURNAL.exists() or f'"{live.proc.pid}/' not in JOURNAL.read_text()


@pytest.mark.parametrize("then", ["next-run", "cleanup"])
def test_the_tracefs_mount_of_a_killed_ebpf_run_goes(then, tracers, tmp_path):
    before = kernel_state()
    if any(m.split()[2] == "tracefs" for m in before[2]) or Path(
            "/sys/kernel/tracing/events").is_dir():
        pytest.skip("tracefs was mounted when the test started: not audtrace's to remove, and"
                    " a test cannot tell whether unmounting it is safe")
    args = ["kill", "--sig", "10", "--duration", "30"]
    pid, stderr = killed(tracers, args, tmp_path / "killed.log")
    assert any(line.startswith("audtrace: mounted tracefs") for line in stderr), stderr
    assert any(m.split()[1:3] == ["/sys/kernel/tracing", "tracefs"] for m in tracing_mounts())

    if then == "cleanup":
        r = run(["cleanup"])
        report = r.stdout
    else:
        started = time.monotonic()
        r = run(["kill", "--sig", "10", "--duration", "2", "-o", str(tmp_path / "next.log")])
        assert time.monotonic() - started > 1.5
        report = r.stderr
    assert r.returncode == 0, r.stderr
    assert "unmounted tracefs at /sys/kernel/tracing" in report, report
    assert kernel_state() == before
    assert_nothing_of(pid)


DEBUGFS = Path("/sys/kernel/debug")


@pytest.fixture
def debugfs_mounted():
    """debugfs mounted at /sys/kernel/debug, as systemd mounts it: mounted for the test when
    it is not (and unmounted after, with any tracefs left below it)."""
    mounts = tracing_mounts()
    if any(m.split()[1:3] == [f"{DEBUGFS}/tracing", "tracefs"] for m in mounts):
        pytest.skip("tracefs is mounted below debugfs already: the test cannot see whether"
                    " audtrace leaves it")
    ours = not any(m.split()[1:3] == [str(DEBUGFS), "debugfs"] for m in mounts)
    if ours:
        subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=True)
    try:
        yield
    finally:
        if ours:
            subprocess.run(["umount", f"{DEBUGFS}/tracing"], capture_output=True)
            subprocess.run(["umount", str(DEBUGFS)], check=True)


@pytest.mark.parametrize("end", ["sigterm", "sigkill-then-cleanup"])
def test_the_tracefs_the_kernel_mounts_below_debugfs_goes(end, debugfs_mounted, tracers,
                                                          tmp_path):
    """BCC looks up tracepoints below /sys/kernel/debug/tracing when it exists, and the
    kernel then mounts tracefs there for good: audtrace's to remove, on every exit path."""
    before = kernel_state()
    automount = [f"{DEBUGFS}/tracing", "tracefs"]
    args = ["kill", "--sig", "10", "--duration", "30"]
    if end == "sigterm":
        t = tracers(args, tmp_path / "run.log")
        assert any(m.split()[1:3] == automount for m in tracing_mounts()), \
            "the kernel mounted no tracefs below debugfs (nothing to test)"
        assert t.stop() == 0
    else:
        pid, _ = killed(tracers, args, tmp_path / "killed.log")
        assert any(m.split()[1:3] == automount for m in tracing_mounts())
        r = run(["cleanup"])
        assert r.returncode == 0, r.stderr
        assert f"unmounted tracefs at {DEBUGFS}/tracing" in r.stdout, r.stdout
        assert_nothing_of(pid)
    assert kernel_state() == before
