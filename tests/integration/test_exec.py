"""`audtrace exec` against the kernel's own records of the same executions (`--source both`).

Field by field: SYSCALL (credentials after a setuid exec included), every EXECVE record
(the kernel's quoting, hex and splitting of a long argument), CWD, the executable's PATH
and PROCTITLE; then the log through the real ausearch and aureport.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from catalogue import aureport, ausearch, diff_records, first, select, stamps_close
from helpers import give_new_tasks_audit_contexts, release, wait_for, waiting_children

pytestmark = pytest.mark.kernel

KEY = "audtrace-exec-test"
NR_EXECVE = 59
NOBODY = 65534
# a child that tries two failing execs (ENOENT, EACCES), then a good one; prints its pid
ACTOR = r"""
import json, os, sys
print(json.dumps({"pid": os.getpid()}), flush=True)
errs = []
for path in sys.argv[1:3]:
    try:
        os.execv(path, [path])
    except OSError as e:
        errs.append(e.errno)
print(json.dumps({"errs": errs}), flush=True)
os.execv("/bin/echo", ["/bin/echo", "hello", "a b", 'q"uote', "x" * 9000, "", "\u00e9t\u00e9"])
"""


def compare(e_recs, a_recs, proctitle: bool = True) -> list[str]:
    diffs = []
    e, a = first(e_recs, "SYSCALL"), first(a_recs, "SYSCALL")
    diffs += diff_records(e, a, skip={"items", "key"})
    e_exec = [f for t, f in e_recs if t == "EXECVE"]
    a_exec = [f for t, f in a_recs if t == "EXECVE"]
    if len(e_exec) != len(a_exec):
        diffs.append(f"EXECVE records: ebpf {len(e_exec)} audit {len(a_exec)}")
    for i, (er, ar) in enumerate(zip(e_exec, a_exec, strict=False)):
        diffs += [f"EXECVE[{i}] {d}" for d in diff_records(er, ar)]
        if set(er) - set(ar) - {"src"}:
            diffs.append(f"EXECVE[{i}] extra {sorted(set(er) - set(ar) - {'src'})}")
    diffs += [f"CWD {d}" for d in diff_records(first(e_recs, "CWD"), first(a_recs, "CWD"))]
    e_path = next(f for t, f in e_recs if t == "PATH")
    a_path = next(f for t, f in a_recs if t == "PATH" and f["item"] == "0")
    # cap_* need the file's capability xattr, which eBPF does not read; after a failed
    # exec no file is open to read an inode from: the name and its type are compared
    only = {"item", "name", "nametype"} if e["exit"] != "0" else None
    diffs += [
        f"PATH {d}"
        for d in diff_records(
            e_path, a_path, only=only, skip={f for f in a_path if f.startswith("cap_")}
        )
    ]
    if proctitle:
        diffs += [
            f"PROCTITLE {d}"
            for d in diff_records(first(e_recs, "PROCTITLE"), first(a_recs, "PROCTITLE"))
        ]
    return diffs


def test_exec_and_failures_match_kernel_audit(tracers, tmp_path):
    log = tmp_path / "exec.log"
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")
    noexec.chmod(0o644)
    tracer = tracers(["exec", "--source", "both", "-k", KEY], log)
    proc = subprocess.run(
        [sys.executable, "-c", ACTOR, str(tmp_path / "missing"), str(noexec)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    lines = proc.stdout.splitlines()
    pid, errs = json.loads(lines[0])["pid"], json.loads(lines[1])["errs"]
    assert errs == [2, 13]  # ENOENT, EACCES: the failures happened
    # four execs by this pid: the python it started as, two failures, echo
    assert wait_for(
        lambda: (
            len(select(tracer.text(), KEY, pid, NR_EXECVE)[1]) >= 4
            and len(select(tracer.text(), KEY, pid, NR_EXECVE)[0]) >= 4
        ),
        20,
    )
    assert tracer.stop() == 0
    ebpf, audit = select(log.read_text(), KEY, pid, NR_EXECVE)
    assert len(ebpf) == 4 and len(audit) == 4
    pairs = list(zip(sorted(ebpf), sorted(audit), strict=True))
    for i, ((e_id, e_recs), (a_id, a_recs)) in enumerate(pairs):
        assert stamps_close(e_id, a_id)
        # the kernel keeps the PROCTITLE it first logged for a task (cached in its audit
        # context) across later execs; eBPF reads the command line of the moment
        assert compare(e_recs, a_recs, proctitle=i < 3) == [], first(a_recs, "SYSCALL")["exit"]
    last_e, last_a = pairs[-1][0][1], pairs[-1][1][1]
    assert first(last_a, "PROCTITLE") == first(pairs[0][1][1], "PROCTITLE")
    title = bytes.fromhex(first(last_e, "PROCTITLE")["proctitle"])
    assert title.startswith(b"/bin/echo\0hello\0a b\0") and len(title) == 128
    exits = [first(r, "SYSCALL")["exit"] for _i, r in sorted(ebpf)]
    assert exits == ["0", "-2", "-13", "0"]
    good = sorted(ebpf)[-1][1]
    execve = first(good, "EXECVE")
    assert execve["argc"] == "7" and execve["a2"] == "612062"  # "a b" in hex
    assert "a4_len" in execve or any("a4_len" in f for t, f in good if t == "EXECVE")

    interp = ausearch(log, "-i", "-p", str(pid), "-sc", "execve")
    assert interp.count("type=EXECVE") >= 2 and interp.count("a1=hello") >= 2
    assert interp.count("exit=ENOENT(No such file or directory)") == 2
    report = aureport(log, "-x", "--summary", "-i")
    assert "/usr/bin/echo" in report


@pytest.fixture
def setuid_id():
    """A setuid-root copy of /usr/bin/id in a directory nobody can reach."""
    d = tempfile.mkdtemp(prefix="audtrace-suid.")
    os.chmod(d, 0o755)
    path = os.path.join(d, "id")
    shutil.copy("/usr/bin/id", path)
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    yield path
    shutil.rmtree(d)


def test_privileged_setuid_exec_by_nobody(tracers, tmp_path, setuid_id):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    log = tmp_path / "priv.log"
    tracer = tracers(["exec", "--privileged", "--source", "both", "-k", KEY], log)
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    suid = subprocess.Popen([*drop, setuid_id], stdout=subprocess.PIPE, text=True)
    out = suid.communicate(timeout=10)[0]
    plain = subprocess.Popen([*drop, "/usr/bin/id"], stdout=subprocess.DEVNULL)
    plain.wait(timeout=10)
    assert "euid=0(root)" in out  # the kernel did run it setuid
    assert wait_for(lambda: all(select(tracer.text(), KEY, suid.pid, NR_EXECVE)), 20)
    tracer.stop()
    text = log.read_text()
    # setpriv's own exec (root, uid == euid) and the plain id (euid nobody) are left out
    ((e_id, e_recs),) = [
        ev
        for ev in select(text, KEY, suid.pid, NR_EXECVE)[0]
        if first(ev[1], "SYSCALL")["exit"] == "0"
    ]
    ((a_id, a_recs),) = select(text, KEY, suid.pid, NR_EXECVE)[1]
    assert compare(e_recs, a_recs) == []
    sc = first(e_recs, "SYSCALL")
    assert (sc["uid"], sc["euid"], sc["suid"]) == (str(NOBODY), "0", "0")
    assert first(e_recs, "PATH")["mode"] == "0104755"
    assert select(text, KEY, plain.pid, NR_EXECVE) == ([], [])
    interp = ausearch(log, "-i", "-ui", str(NOBODY), "-sc", "execve")
    assert interp.count("euid=root") >= 2 and interp.count("uid=nobody") >= 2


def test_audit_side_keeps_every_pid_asked(tracers, tmp_path):
    """`--source audit --pid A --pid B`: kernel audit reports the executions of A and of B,
    and not of C."""
    give_new_tasks_audit_contexts()
    children = waiting_children(3, "import os; os.execv('/bin/true', ['/bin/true'])")
    a, b, c = (p.pid for p in children)
    log = tmp_path / "pids.log"
    tracer = tracers(["exec", "--source", "audit", "--pid", str(a), "--pid", str(b),
                      "-k", KEY], log)
    assert release(children) == [0, 0, 0]
    assert wait_for(lambda: all(select(tracer.text(), KEY, p, NR_EXECVE)[1] for p in (a, b)),
                    20)
    time.sleep(1)       # C's event, were it relayed, would have come with the others
    assert tracer.stop() == 0
    text = log.read_text()
    assert [len(select(text, KEY, p, NR_EXECVE)[1]) for p in (a, b, c)] == [1, 1, 0]
    assert "src=ebpf" not in text
