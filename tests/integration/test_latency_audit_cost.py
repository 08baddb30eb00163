"""`audtrace latency --audit-cost RULE`: real kernel audit rules loaded and removed in turns
while the timed syscalls run, the report read back, and the audit state checked unchanged
afterwards (also when the run is stopped by a signal or --duration while its rule is in the
kernel)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest
from helpers import REPO, audit_enabled, audit_rules, follow_stderr, tracing_mounts, wait_for

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(shutil.which("auditctl") is None, reason="needs auditctl (auditd)"),
]

KEY = "audtrace-test-cost"
ON_GETPPID = f"-a always,exit -F arch=b64 -S getppid -F key={KEY}"


def audtrace(*args: str) -> list[str]:
    return [str(REPO / "audtrace"), "latency", *args]


@pytest.fixture(params=["0", "1"], ids=["audit-off-before", "audit-on-before"])
def audit_before(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """Audit's enabled flag as parametrized, no rule of ours; (flag, rules) to compare with
    after the run. The flag found is put back at the end."""
    found = audit_enabled()
    if found == "2":
        pytest.skip("audit is locked (enabled=2)")
    if KEY in audit_rules():
        pytest.fail(f"a rule with key {KEY} is already loaded")
    subprocess.run(["auditctl", "-e", request.param], check=True, capture_output=True)
    yield audit_enabled(), audit_rules()
    subprocess.run(["auditctl", "-e", found], check=True, capture_output=True)


def test_a_rule_on_getppid_costs_getppid_and_not_what_it_does_not_name(audit_before):
    out = subprocess.run(
        audtrace("--audit-cost", ON_GETPPID, "--syscall", "getppid,getpid", "--load",
                 "--rounds", "2", "--window", "0.3", "--format", "json"),
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (audit_enabled(), audit_rules()) == audit_before
    tracing = next(line for line in out.stderr.splitlines()
                   if line.startswith("audtrace: tracing"))
    assert "audit cost of 1 rule: 2 rounds of 0.3s with and 0.3s without" in tracing
    (report,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert report["report"] == "audit-cost" and report["windows_done"] == 4
    assert report["rules"] == [ON_GETPPID]
    got = {e["name"]: e for e in report["entries"]}
    ppid, pid = got["getppid"], got["getpid"]
    for e in (ppid, pid):
        assert e["with"]["count"] > 1000 and e["without"]["count"] > 1000
        assert sum(d["difference"] for d in e["difference"]) == pytest.approx(0, abs=1e-4)
    # the rule selects getppid: audit builds a record for every call
    assert ppid["rules_applying"] == 1
    assert ppid["added_ns"]["mean"] > 0 and ppid["added_ns"]["p50"] > 0
    assert len(ppid["rounds_added_mean_ns"]) == 2
    assert all(d > 0 for d in ppid["rounds_added_mean_ns"])
    # the mean is exact: with - without of the reported sums and counts
    w, wo = ppid["with"], ppid["without"]
    exact = w["sum_ns"] / w["count"] - wo["sum_ns"] / wo["count"]
    assert ppid["added_ns"]["mean"] == round(exact)
    # getpid is named by no rule: only audit's work on every syscall, far below a record's
    assert pid["rules_applying"] == 0
    assert pid["added_ns"]["mean"] < ppid["added_ns"]["mean"] / 3


def test_text_report_shows_the_difference():
    before = audit_enabled(), audit_rules()
    out = subprocess.run(
        audtrace("--audit-cost", ON_GETPPID, "--load", "--rounds", "1", "--window", "0.2"),
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (audit_enabled(), audit_rules()) == before
    lines = out.stdout.splitlines()
    assert lines[0].startswith("== latency audit cost,")
    # without --syscall the rule's own syscalls are timed
    (head,) = [ln for ln in lines if ln.startswith("getppid: added per call: mean +")]
    assert " p50 +" in head and " p99 " in head
    assert "    (1 of 1 rules apply to getppid)" in lines
    assert any("with - without" in ln for ln in lines)


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP", "duration"])
def test_stopped_while_the_rule_is_in_removes_it(audit_before, stop):
    extra = ["--duration", "2"] if stop == "duration" else []
    proc = subprocess.Popen(
        audtrace("--audit-cost", ON_GETPPID, "--load", "--rounds", "100", "--window", "0.5",
                 *extra),
        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stderr: list[str] = []
    reader = follow_stderr(proc, stderr, 120, "audtrace latency --audit-cost")
    try:
        assert wait_for(lambda: KEY in audit_rules(), timeout=10), "the rule never went in"
        if stop != "duration":
            proc.send_signal(getattr(signal, stop))
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    assert proc.returncode == 0, "\n".join(stderr)
    assert (audit_enabled(), audit_rules()) == audit_before
    assert "(stopped after" in stdout.splitlines()[0]
    assert not any("Traceback" in line for line in stderr)


@pytest.mark.parametrize("args, says", [
    (["--audit-cost", "-D"], "is no rule to add"),
    (["--audit-cost", "-a always,exit -S all"], "name no syscall"),
    (["--audit-cost", ON_GETPPID, "--load", "--syscall", "ioctl"], "no built-in way"),
    (["--audit-cost", ON_GETPPID, "--per-process"], "does not go with --audit-cost"),
    (["--load", "--syscall", "getppid"], "applies to --audit-cost only"),
])
def test_bad_requests_get_one_line(args, says):
    before = audit_enabled(), audit_rules()
    out = subprocess.run(audtrace(*args), cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1 and says in out.stderr, out.stderr
    assert (audit_enabled(), audit_rules()) == before


def test_a_rule_the_kernel_refuses_is_one_line_and_nothing_stays():
    before = audit_enabled(), audit_rules()
    out = subprocess.run(
        audtrace("--audit-cost", f"{ON_GETPPID} -F dir=/nonexistent/audtrace-test", "--load",
                 "--rounds", "1", "--window", "0.2"),
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1
    last = out.stderr.splitlines()[-1]
    assert "add rule" in last and "ENOENT" in last, out.stderr
    assert "Traceback" not in out.stderr
    assert (audit_enabled(), audit_rules()) == before


def test_killed_with_sigkill_while_the_rule_is_in_cleanup_puts_it_back(audit_before):
    mounts = tracing_mounts()
    proc = subprocess.Popen(
        audtrace("--audit-cost", ON_GETPPID, "--load", "--rounds", "100", "--window", "0.5"),
        cwd=REPO, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    stderr: list[str] = []
    reader = follow_stderr(proc, stderr, 120, "audtrace latency --audit-cost")
    try:
        assert wait_for(lambda: KEY in audit_rules(), timeout=10), "the rule never went in"
    finally:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    assert KEY in audit_rules()         # left behind: what cleanup is for
    # the load process goes with audtrace (PR_SET_PDEATHSIG)
    assert wait_for(lambda: subprocess.run(["pgrep", "-x", "audtrace-load"],
                                           capture_output=True).returncode == 1, timeout=5)
    done = subprocess.run([str(REPO / "audtrace"), "cleanup"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"restored what run {proc.pid}" in done.stdout, done.stdout
    assert (audit_enabled(), audit_rules()) == audit_before
    assert tracing_mounts() == mounts
