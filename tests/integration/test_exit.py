"""`audtrace exit` against the kernel's own records: exit_group with a chosen code (no
success=/exit= fields), a SIGABRT death (the kernel's own ANOM_ABEND, read here from the
audit multicast group: audtrace relays only events its rules match, and no rule yields an
ANOM_ABEND), a SIGTERM death the kernel does not report, linked to the `audtrace kill`
event of the same signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from audtrace.compat.record import parse_netlink, split_fields
from audtrace.tracer.audit.netlink import AuditReader
from catalogue import aureport, ausearch, diff_records, events, first, select, stamps_close
from helpers import give_new_tasks_audit_contexts, release, wait_for, waiting_children

pytestmark = pytest.mark.kernel

KEY = "audtrace-exit-test"
NR_EXIT_GROUP = 231


def abends(text: str, pid: int) -> tuple[list, list]:
    ebpf, audit = [], []
    for ident, recs in events(text).items():
        rec = first(recs, "ANOM_ABEND")
        if rec is not None and rec.get("pid") == str(pid):
            (ebpf if rec.get("src") == "ebpf" else audit).append((ident, rec))
    return ebpf, audit


AUDIT_ANOM_ABEND = 1701


def kernel_abend(reader: AuditReader, pid: int, timeout: float = 5) -> tuple | None:
    """The kernel's ANOM_ABEND for pid, as ((sec, msec, serial), fields), or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for msg_type, text in reader.recv_records():
            if msg_type != AUDIT_ANOM_ABEND:
                continue
            sec, msec, serial, body = parse_netlink(msg_type, text)
            fields = dict(split_fields(body))
            if fields.get("pid") == str(pid):
                return (sec, msec, serial), fields
        time.sleep(0.05)
    return None


def test_exit_codes_and_signal_deaths(tracers, tmp_path):
    log, kill_log = tmp_path / "exit.log", tmp_path / "kill.log"
    tracer = tracers(["exit", "--source", "both", "-k", KEY], log)
    killer = tracers(["kill", "--sig", "TERM", "-k", KEY], kill_log)
    code = subprocess.Popen(["/bin/sh", "-c", "exit 42"])
    assert code.wait(10) == 42
    reader = AuditReader()
    try:
        for _try in range(3):  # kernel audit drops records under load (its `lost` counter)
            abort = subprocess.Popen(
                [sys.executable, "-c", "import os; os.abort()"], stderr=subprocess.DEVNULL
            )
            assert abort.wait(10) == -signal.SIGABRT
            kernel = kernel_abend(reader, abort.pid)
            if kernel is not None:
                break
    finally:
        reader.close()
    assert kernel is not None, "the kernel wrote no ANOM_ABEND in three tries"
    victim = subprocess.Popen(["sleep", "30"])
    time.sleep(0.2)
    victim.send_signal(signal.SIGTERM)  # os.kill from this process: a kill(2) syscall
    assert victim.wait(10) == -signal.SIGTERM
    assert wait_for(
        lambda: (
            all(select(tracer.text(), KEY, code.pid, NR_EXIT_GROUP))
            and abends(tracer.text(), victim.pid)[0]
            and abends(tracer.text(), abort.pid)[0]
        ),
        20,
    )
    assert tracer.stop() == 0 and killer.stop() == 0
    text = log.read_text()

    ((e_id, e_recs),) = select(text, KEY, code.pid, NR_EXIT_GROUP)[0]
    ((a_id, a_recs),) = select(text, KEY, code.pid, NR_EXIT_GROUP)[1]
    assert stamps_close(e_id, a_id)
    e, a = first(e_recs, "SYSCALL"), first(a_recs, "SYSCALL")
    assert diff_records(e, a, skip={"key"}) == []
    assert set(e) - set(a) == {"src"}
    assert "success" not in e and "exit" not in e and e["a0"] == "2a"
    assert [t for t, _ in e_recs] == [t for t, _ in a_recs] == ["SYSCALL", "PROCTITLE"]

    # SIGABRT: the kernel's own ANOM_ABEND, field by field
    ((e_id, e),) = abends(text, abort.pid)[0]
    a_id, a = kernel
    assert stamps_close(e_id, a_id, 50)
    assert diff_records(e, a) == [] and e["sig"] == "6"
    # SIGTERM: the kernel has nothing; eBPF names the sender, this test process
    ((_i, e),) = abends(text, victim.pid)[0]
    assert abends(text, victim.pid)[1] == []
    assert (e["sig"], e["core"], e["by_pid"]) == ("15", '"no"', f'"{os.getpid()}"')

    # the kill event beside it: the same victim pid and signal
    both = tmp_path / "both.log"
    both.write_text(text + kill_log.read_text())
    by_sender = ausearch(both, "-p", e["by_pid"].strip('"'), "-sc", "kill", "-i")
    assert f"opid={victim.pid}" in by_sender and "a1=SIGTERM" in by_sender
    by_victim = ausearch(both, "-p", str(victim.pid), "-i")
    assert "type=ANOM_ABEND" in by_victim and "sig=SIGTERM" in by_victim
    assert "exit_group" in ausearch(log, "-p", str(code.pid), "-i")
    anomalies = [ln for ln in aureport(log, "--anomaly", "-i").splitlines() if "ANOM_ABEND" in ln]
    assert any("/usr/bin/sleep" in ln for ln in anomalies), anomalies


def test_code_filter(tracers, tmp_path):
    log = tmp_path / "code.log"
    tracer = tracers(["exit", "--code", "7", "--source", "both", "-k", KEY], log)
    seven = subprocess.Popen(["/bin/sh", "-c", "exit 7"])
    other = subprocess.Popen(["/bin/sh", "-c", "exit 8"])
    seven.wait(10), other.wait(10)
    assert wait_for(lambda: all(select(tracer.text(), KEY, seven.pid, NR_EXIT_GROUP)), 20)
    tracer.stop()
    text = log.read_text()
    assert select(text, KEY, other.pid) == ([], [])  # neither source: `-F a0=7`
    assert len(select(text, KEY, seven.pid)[0]) == 1


def test_exe_filter(tracers, tmp_path):
    """`--exe` compares the executable's inode (audit: `-F exe=`): sleep's end is reported
    in both sources, sh's in neither."""
    log = tmp_path / "exe.log"
    tracer = tracers(["exit", "--exe", "/usr/bin/sleep", "--source", "both", "-k", KEY], log)
    sleeper = subprocess.Popen(["/usr/bin/sleep", "0.1"])
    shell = subprocess.Popen(["/bin/sh", "-c", "exit 0"])
    sleeper.wait(10), shell.wait(10)
    assert wait_for(lambda: all(select(tracer.text(), KEY, sleeper.pid, NR_EXIT_GROUP)), 20)
    tracer.stop()
    text = log.read_text()
    assert select(text, KEY, shell.pid) == ([], [])
    ebpf, audit = select(text, KEY, sleeper.pid, NR_EXIT_GROUP)
    assert len(ebpf) == len(audit) == 1


def test_audit_side_keeps_every_pid_asked(tracers, tmp_path):
    """`--source audit --pid A --pid B`: the exit_group of A and the kernel's ANOM_ABEND of
    B (a SIGABRT death) are relayed; C's exit_group and D's ANOM_ABEND are not."""
    give_new_tasks_audit_contexts()
    exits = waiting_children(2, "import os; os._exit(3)")
    aborts = waiting_children(2, "import os, resource; resource.setrlimit("
                              "resource.RLIMIT_CORE, (0, 0)); os.abort()")
    (a, c), (b, d) = (p.pid for p in exits), (p.pid for p in aborts)
    log = tmp_path / "pids.log"
    tracer = tracers(["exit", "--source", "audit", "--pid", str(a), "--pid", str(b),
                      "-k", KEY], log)
    assert release(exits + aborts) == [3, 3, -signal.SIGABRT, -signal.SIGABRT]
    assert wait_for(lambda: select(tracer.text(), KEY, a, NR_EXIT_GROUP)[1]
                    and abends(tracer.text(), b)[1], 20)
    time.sleep(1)       # C's and D's events, were they relayed, would have come too
    assert tracer.stop() == 0
    text = log.read_text()
    assert [len(select(text, KEY, p, NR_EXIT_GROUP)[1]) for p in (a, b, c, d)] == [1, 0, 0, 0]
    assert [len(abends(text, p)[1]) for p in (a, b, c, d)] == [0, 1, 0, 0]
    assert "src=ebpf" not in text
