"""The real `./audtrace` command: every way out leaves the system as found; bad input is refused.

One run per exit path (SIGINT, SIGTERM, SIGHUP, --count, --duration), each with `--source
both` so that everything audtrace changes is in play: tracefs (mounted when missing), BPF
programs, audit rules and the audit enabled flag. Each is measured with the kernel's own
interfaces (bpf(2) id walk, /proc/self/mounts, auditctl), never with audtrace's code.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from audtrace.compat import tables
from audtrace.compat.record import parse_line, split_fields
from audtrace.compat.signals import parse_signals
from audtrace.tracer.ebpf import system
from helpers import (
    REPO,
    SystemState,
    act,
    bpf_prog_ids,
    bpf_prog_ids_held,
    leaked_bpf_progs,
    others_changing_state,
    system_state,
    tracing_mounts,
    wait_for,
)

pytestmark = pytest.mark.kernel

AUDTRACE = str(REPO / "audtrace")
# real-time signals nothing else sends, so a test running beside never lands in our logs;
# two signals give four audit rules (kill-like a1, tgkill-like a2, per signal)
SIGS = "RTMIN+13,RTMAX-3"
SIG = parse_signals(SIGS)[0]
# the audit rules of our runs carry it: any left behind are certainly ours
KEY = f"audtrace-cli-{os.getpid()}"
KILL_NR = str(tables.syscall_number(tables.host_arch(), "kill"))
# audtrace's own bookkeeping in the log: its rule changes, lost-event notes
NOT_TRACED = {"CONFIG_CHANGE", "DAEMON_ERR"}
# test-only switch of tracer/audit/source.py: SIGSTOP right after the first rule is added
STOP_AFTER_FIRST_RULE = "AUDTRACE_TEST_STOP_AFTER_FIRST_RULE"


# ---- running the command ----------------------------------------------------------------
def run(
    args: list[str], timeout: float = 60, stderr=subprocess.PIPE, cmd: list[str] | None = None
) -> subprocess.CompletedProcess:
    """Run audtrace to its end; one that hangs gets SIGTERM (so it restores) and fails."""
    argv = [*(cmd or []), AUDTRACE, *args]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"audtrace {args} did not exit within {timeout} s:\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err or "")


def start_both(tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`audtrace kill` on both sources, its stderr piped for the test to read."""
    return subprocess.Popen(
        [AUDTRACE, "kill", "--sig", SIGS, "--source", "both", "-k", KEY,
         "-o", str(tmp_path / "x.log")],
        cwd=REPO, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def parse_events(text: str) -> dict[tuple, list[tuple[str, dict]]]:
    """{(sec, msec, serial): [(type, fields)]}; every line must parse as audit reads it."""
    assert not text or text.endswith("\n"), "the log ends in a cut line"
    out: dict[tuple, list] = {}
    for line in text.splitlines():
        _node, rtype, sec, msec, serial, body = parse_line(line)  # ValueError: malformed
        out.setdefault((sec, msec, serial), []).append((rtype, dict(split_fields(body))))
    return out


def log_events(path: Path, partial: bool = False, after: str = "") -> dict:
    """The events of a log. `partial`: still being written, leave out an unfinished last
    line. `after`: text written before audtrace, which must still be there, unparsed."""
    text = path.read_text() if path.exists() else ""
    assert text.startswith(after), "the log lost what was in it before"
    text = text[len(after) :]
    if partial:
        text = text[: text.rfind("\n") + 1]
    return parse_events(text)


def kill_events(events: dict, done: dict) -> dict[str, list]:
    """The events of the actor's kill(2), by source."""
    out: dict[str, list] = {"ebpf": [], "audit": []}
    for recs in events.values():
        sc = next((f for t, f in recs if t == "SYSCALL"), {})
        if sc.get("pid") == str(done["pid"]) and sc.get("syscall") == KILL_NR:
            out["ebpf" if sc.get("src") == "ebpf" else "audit"].append(recs)
    return out


def check_kill_event(recs: list, done: dict, key: str | None) -> None:
    sc = next(f for t, f in recs if t == "SYSCALL")
    assert sc["a1"] == f"{done['sig']:x}" and sc["success"] == "yes", sc
    if key is not None:
        assert sc["key"] == f'"{key}"', sc
    assert [f["opid"] for t, f in recs if t == "OBJ_PID"] == [str(done["target"])], recs
    assert "PROCTITLE" in [t for t, _ in recs], recs


def assert_restored(before: SystemState, key: str, held: frozenset[int] = frozenset()) -> None:
    """The system as `before`: mounts, audit flag and rules, and no BPF program left behind.

    What is certainly ours is always checked: rules with our key, programs audtrace held.
    The machine-wide comparison needs a machine where nothing else changes that state;
    while another audtrace or auditd runs beside (a parallel session), it only warns."""

    def same() -> bool:
        return system_state() == before and not held & bpf_prog_ids()

    wait_for(same, timeout=5)
    after = system_state()
    assert f"key={key}" not in after.audit_rules, f"audtrace's rules left:\n{after.audit_rules}"
    assert not held & after.progs, f"audtrace's BPF programs still loaded: {held & after.progs}"
    assert not leaked_bpf_progs(before.progs), "BPF programs loaded that nobody holds"
    if after != before and (others := others_changing_state()):
        warnings.warn(
            f"system state not compared: changed by others meanwhile: {others}", stacklevel=2
        )
        return
    assert after.mounts == before.mounts, "tracefs/debugfs mounts changed"
    assert after.audit_enabled == before.audit_enabled, "audit enabled flag changed"
    assert after.audit_rules == before.audit_rules, "audit rules changed"


def stderr_ok(lines: list[str]) -> None:
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert sum(line.startswith("audtrace: tracing") for line in lines) == 1, "\n".join(lines)


# ---- every exit path ----------------------------------------------------------------------
EXIT_PATHS = {
    "SIGINT": [],
    "SIGTERM": [],
    "SIGHUP": [],
    "count": ["--count", "1"],
    "duration": ["--duration", "2"],
}


@pytest.mark.parametrize("how", list(EXIT_PATHS))
def test_exit_path_leaves_system_as_found(how, tracers, tmp_path):
    before = system_state()
    key = f"{KEY}-{how}"
    log = tmp_path / "x.log"
    t = tracers(["kill", "--sig", SIGS, "--source", "both", "-k", key, *EXIT_PATHS[how]], log)
    started = time.monotonic()
    # while it runs: its programs are loaded, its rules in, audit on, tracefs mounted
    held, during = bpf_prog_ids_held(t.proc.pid), system_state()
    assert t.proc.poll() is None, "exited before any event:\n" + "\n".join(t.stderr)
    assert held and held <= during.progs
    assert during.audit_rules.count(f"key={key}") == 4, during.audit_rules
    assert during.audit_enabled != "0"
    assert any(" tracefs " in m for m in during.mounts)

    done = act("kill", SIG)  # a fresh process: kernel audit has a context for it
    if how.startswith("SIG"):
        assert wait_for(lambda: all(kill_events(log_events(log, partial=True), done).values()))
        rc = t.stop(getattr(signal, how))
    else:
        rc = t.proc.wait(timeout=20)
        t._reader.join(timeout=5)
    elapsed = time.monotonic() - started
    assert rc == 0, "\n".join(t.stderr)
    stderr_ok(t.stderr)

    events = log_events(log)
    found = kill_events(events, done)
    for source, evs in found.items():
        for recs in evs:
            check_kill_event(recs, done, key)
        if how != "count":
            assert len(evs) == 1, f"{source}: {len(evs)} events of the kill"
    if how == "count":
        traced = [recs for recs in events.values() if recs[0][0] not in NOT_TRACED]
        assert len(traced) == 1, f"--count 1 wrote {len(traced)} events"
        assert len(found["ebpf"]) + len(found["audit"]) == 1, "the one event is not the kill"
    if how == "duration":
        assert elapsed > 1.5, f"stopped after {elapsed:.1f} s of --duration 2"
    assert_restored(before, key, held)


# ---- failures half-way ----------------------------------------------------------------------
def test_failure_once_rules_are_added(tmp_path):
    """The latest failure reachable from outside: the tracing notice, written once every probe
    and rule is live, meets a closed stderr (EPIPE). The reader goes away right after the
    last notice before the rules are added (when audit is on already there is none: then
    after the first notice); should audtrace win that race and print the tracing line
    first, its summary notice at SIGTERM meets the closed pipe instead."""
    before = system_state()
    proc = start_both(tmp_path)
    last = "audtrace: audit was off" if before.audit_enabled == "0" else ""
    try:
        for line in proc.stderr:
            if line.startswith((last, "audtrace: tracing")):
                break
        proc.stderr.close()
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # lost the race: now it fails at the end
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert rc != 0
    assert_restored(before, KEY)


def test_unwritable_stderr(tmp_path):
    """Every notice fails (ENOSPC), the first of them right after tracefs is mounted."""
    before = system_state()
    with open("/dev/full", "w") as full:
        r = run(
            [
                "kill",
                "--sig",
                SIGS,
                "--source",
                "both",
                "-k",
                KEY,
                "--duration",
                "1",
                "-o",
                str(tmp_path / "x.log"),
            ],
            stderr=full,
        )
    assert r.returncode != 0
    assert_restored(before, KEY)


def test_signal_during_setup(tmp_path):
    """SIGTERM inside set-up: set-up finishes, nothing is traced, all is put back. The run is
    held at one moment of its set-up, every time: its BPF program loaded and its first audit
    rule added (the test-only stop of tracer/audit/source.py), and signalled there."""
    before = system_state()
    proc = start_both(tmp_path, env={**os.environ, STOP_AFTER_FIRST_RULE: "1"})
    try:
        assert wait_for(lambda: process_state(proc.pid) == "T", timeout=90), \
            "the run never stopped inside its set-up"
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert_restored(before, KEY)


# ---- the tracing line ----------------------------------------------------------------------
def test_tracing_line_comes_once_probes_are_live(tmp_path):
    log = tmp_path / "x.log"
    target = subprocess.Popen(["sleep", "30"])
    proc = subprocess.Popen(
        [AUDTRACE, "kill", "--sig", SIGS, "--target-pid", str(target.pid), "-o", str(log)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("audtrace: tracing"):
                os.kill(target.pid, SIG)  # not a moment later
                break
        else:
            pytest.fail("no tracing line:\n" + "\n".join(lines))
        done = {"pid": os.getpid(), "target": target.pid, "sig": SIG}
        assert wait_for(lambda: kill_events(log_events(log, partial=True), done)["ebpf"]), (
            "the signal sent right after the tracing line is not in the log"
        )
        proc.send_signal(signal.SIGTERM)
        lines += proc.communicate(timeout=30)[1].splitlines()
    finally:
        target.kill()
        target.wait()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert proc.returncode == 0
    stderr_ok(lines)
    check_kill_event(kill_events(log_events(log), done)["ebpf"][0], done, None)


# ---- -o FILE ----------------------------------------------------------------------------------
def test_output_file_created_0600_and_appended(tracers, tmp_path):
    new, old = tmp_path / "new.log", tmp_path / "old.log"
    prefill = "written before audtrace ran\nand not audit text either\n"
    old.write_text(prefill)
    old.chmod(0o640)
    for log in (new, old):
        umask = os.umask(0)  # the 0600 must be audtrace's doing, not our umask's
        try:
            t = tracers(["kill", "--sig", SIGS, "--source", "audit", "-k", KEY], log)
        finally:
            os.umask(umask)
        done = act("kill", SIG)
        after = prefill if log == old else ""
        assert wait_for(
            lambda log=log, done=done, after=after: kill_events(
                log_events(log, partial=True, after=after), done
            )["audit"]
        )
        assert t.stop() == 0
    assert new.stat().st_mode & 0o777 == 0o600
    assert old.stat().st_mode & 0o777 == 0o640, "an existing log's mode was changed"
    assert kill_events(log_events(old, after=prefill), done)["audit"], "the log was truncated"


# ---- bad input ----------------------------------------------------------------------------------
BAD_INPUT = {
    "sig 99": ["kill", "--sig", "99"],
    "sig FOO": ["kill", "--sig", "FOO"],
    "sig empty": ["kill", "--sig", ""],
    "pid abc": ["kill", "--pid", "abc"],
    "pid 0": ["kill", "--pid", "0"],
    "duration -1": ["kill", "--duration", "-1"],
    "duration nan": ["kill", "--duration", "nan"],
    "count 0": ["kill", "--count", "0"],
    "format": ["kill", "--format", "bogus"],
    "source": ["kill", "--source", "bogus"],
    "target-comm 16 bytes": ["kill", "--target-comm", "0123456789abcdef"],
    "comm 16 bytes, exec": ["exec", "--comm", "0123456789abcdef"],
    "comm 16 bytes, net": ["net", "--comm", "0123456789abcdef"],
    "key 257 bytes": ["kill", "-k", "k" * 257, "--duration", "1"],
    # each fits; joined by \x01 in the kernel's one key field they do not
    "keys 401 bytes": ["kill", "-k", "a" * 200, "-k", "b" * 200, "--duration", "1"],
    # these parse: the file must be refused before anything is set up
    "-o no dir": ["kill", "-o", "/nonexistent/dir/x", "--duration", "1"],
    "-o unwritable": ["kill", "-o", "/proc/version", "--duration", "1"],
    "subcommand": ["bogus"],
    "option": ["kill", "--bogus"],
    "option before subcommand": ["--bogus", "kill"],
}


@pytest.mark.parametrize("args", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_one_line(args):
    before = tracing_mounts()
    r = run(args)
    lines = r.stderr.splitlines()
    assert r.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("audtrace: "), r.stderr
    assert r.stdout == ""
    opt = next((a for a in args if a.startswith("-")), None)
    if opt is not None and opt.startswith("--") and opt != "--bogus":
        assert opt in lines[0], f"the message does not name {opt}"
    assert tracing_mounts() == before


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


@pytest.mark.parametrize(
    "source, caps",
    [
        ("ebpf", ["CAP_BPF", "CAP_PERFMON"]),
        ("both", ["CAP_BPF", "CAP_PERFMON", "CAP_AUDIT_CONTROL", "CAP_AUDIT_READ"]),
    ],
)
def test_non_root_names_missing_capabilities(source, caps):
    probe = subprocess.run(
        [*NOBODY, str(REPO / ".venv/bin/python"), "-c", "import audtrace.tracer.cli"],
        cwd="/",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip("the venv is not usable by nobody: " + probe.stderr.strip()[-200:])
    r = run(["kill", "--source", source], cmd=NOBODY)
    lines = r.stderr.splitlines()
    assert r.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("audtrace: "), r.stderr
    assert all(c in lines[0] for c in caps), lines[0]


# ---- doctor -----------------------------------------------------------------------------------
def measured_tracefs(tmp_path: Path) -> set[str]:
    """What tracefs offers, seen through a private mount in a throw-away mount namespace
    (the machine's own mounts untouched): "mounted", "kprobe_events", "sys_enter_kill"."""
    mnt = tmp_path / "tracefs"
    mnt.mkdir()
    script = (
        'mount -t tracefs nodev "$1" || exit 0; echo mounted;'
        ' test -e "$1/kprobe_events" && echo kprobe_events;'
        ' test -d "$1/events/syscalls/sys_enter_kill" && echo sys_enter_kill; exit 0'
    )
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(mnt)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_doctor_agrees_with_the_machine(tmp_path):
    before = system_state()
    r_json = run(["doctor", "--format", "json"])
    r_text = run(["doctor"])
    assert r_json.returncode == 0, r_json.stderr
    assert r_text.returncode == 0, r_text.stderr
    report = json.loads(r_json.stdout)
    ok = {c["name"]: c["ok"] for c in report["checks"]}
    details = {c["name"]: c["detail"] for c in report["checks"]}
    fs = measured_tracefs(tmp_path)
    assert ok["BTF"] == Path("/sys/kernel/btf/vmlinux").is_file()
    assert ok["tracefs"] == ("mounted" in fs)
    if "mounted" in fs:
        assert ok["tracepoints"] == ("sys_enter_kill" in fs)
    kprobes = Path("/sys/bus/event_source/devices/kprobe").is_dir() or "kprobe_events" in fs
    assert ok["kprobes"] == kprobes, details["kprobes"]
    enabled = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
    flag = re.search(r"^enabled (\d+)", enabled, re.M)
    assert flag and f"enabled {flag[1]}," in details["kernel audit"]
    # the text report says the same
    for name, good in ok.items():
        m = re.search(rf"^\s+(yes|no)\s+{re.escape(name)}\s", r_text.stdout, re.M)
        assert m and (m[1] == "yes") == good, f"{name}: text and json disagree"
    assert_restored(before, KEY)


def test_doctor_as_a_user_says_what_it_cannot_see(tmp_path):
    """Not root, with tracefs mounted but not readable: a report, never a traceback."""
    mounted = system.tracefs_mounted(lambda _m: None)
    with mounted:
        r = subprocess.run([str(REPO / "audtrace"), "doctor"], capture_output=True, text=True,
                           cwd="/", timeout=60, preexec_fn=lambda: (os.setgid(65534),
                                                                     os.setuid(65534)))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "tracefs" in r.stdout
