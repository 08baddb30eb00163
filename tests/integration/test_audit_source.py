"""The kernel audit source against the real kernel, auditctl, ausearch and the kernel log.

Every test saves `auditctl -s`/`-l` first and puts back only what differs afterwards.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from audtrace.compat import record
from audtrace.compat.rules import Rule
from audtrace.tracer.audit.netlink import AuditNetlink
from audtrace.tracer.audit.source import AUDIT_WAS_OFF, AuditSource
from audtrace.tracer.subcommands.kill import audit_rules

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(shutil.which("auditctl") is None, reason="needs auditctl (auditd)"),
]

KEY = f"audtrace-test-{os.getpid()}"


def auditctl(*args: str, check: bool = True) -> str:
    return subprocess.run(["auditctl", *args], capture_output=True, text=True, check=check,
                          timeout=10).stdout


def enabled_flag() -> int:
    for line in auditctl("-s").splitlines():
        if line.startswith("enabled "):
            return int(line.split()[1])
    raise AssertionError("auditctl -s printed no enabled line")


def rule_lines() -> list[str]:
    lines = auditctl("-l").splitlines()
    return [] if lines == ["No rules"] else lines


def delete_listed(line: str) -> None:
    """Delete a rule given as an `auditctl -l` line."""
    args = shlex.split(line)
    if args[0] == "-a":
        args[0] = "-d"
    auditctl(*args, check=False)


@pytest.fixture(params=[0, 1], ids=["audit-off-before", "audit-on-before"])
def audit_state(request: pytest.FixtureRequest) -> Iterator[tuple[int, list[str]]]:
    """The state each test starts from (enabled flag as parametrized); restored after."""
    enabled0, rules0 = enabled_flag(), rule_lines()
    if enabled0 == 2:
        pytest.skip("audit is locked (enabled=2)")
    if enabled0 != request.param:
        auditctl("-e", str(request.param))
    yield request.param, rule_lines()
    for line in rule_lines():
        if line not in rules0:
            delete_listed(line)
    if enabled_flag() != enabled0:
        auditctl("-e", str(enabled0))


def wait_events(src: AuditSource, pred, timeout: float = 5.0) -> list[record.Event]:
    """Events read from `src` until one satisfies `pred` (or the time is up)."""
    seen: list[record.Event] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        select.select([src], [], [], 0.1)
        seen += src.read_events()
        if any(pred(e) for e in seen):
            break
    return seen


# rules of different shapes; arch first in each, so auditctl's listing (which carries the
# previous rule's arch over to a rule without one) names their syscalls right
SHAPES = [
    Rule(syscalls=[62, 200], fields=[("arch", "=", "b64"), ("a1", "=", 15),
                                          ("key", "=", KEY)]),
    Rule(syscalls=[234], fields=[("arch", "=", "b64"), ("a2", "!=", 9),
                                      ("auid", "!=", "unset"), ("success", "=", 1),
                                      ("key", "=", KEY), ("key", "=", "second")]),
    Rule(fields=[("arch", "=", "b32"), ("exit", "=", -1), ("exe", "=", "/usr/bin/sleep"),
                      ("uid", ">=", 1000), ("key", "=", KEY)]),
]


def test_rules_listed_like_auditctl_and_restored(audit_state):
    enabled_before, rules_before = audit_state
    notices: list[str] = []
    rules = SHAPES + audit_rules([15, 12], [KEY])
    with AuditSource(rules, notices.append):
        assert enabled_flag() == 1
        listed = rule_lines()
        assert listed == rules_before + [str(r) for r in rules]
    assert (AUDIT_WAS_OFF in notices) == (enabled_before == 0)
    assert rule_lines() == rules_before
    assert enabled_flag() == enabled_before


def test_rules_added_by_auditctl_read_back(audit_state):
    """Our decoder against auditctl's encoder: rules added by auditctl, listed by us."""
    _, rules_before = audit_state
    added = [
        f"-a always,exit -F arch=b64 -S kill,tkill -F a1=0xF -F key={KEY}",
        f"-a always,exit -F arch=b64 -S tgkill -F a2!=0x9 -F auid!=-1 -F key={KEY}",
        f"-a always,exit -F arch=b64 -S all -F exit=-EPERM -F exe=/usr/bin/sleep -F key={KEY}",
        f"-a always,exit -F arch=b32 -S kill -F uid>=1000 -F success=0 -F key={KEY}",
    ]
    for line in added:
        auditctl(*shlex.split(line))
    with AuditNetlink() as nl:
        ours = [str(r) for r in nl.list_rules()]
    assert ours == rule_lines() == rules_before + added


def test_rule_present_before_is_left_alone(audit_state):
    _, rules_before = audit_state
    theirs, mine = audit_rules([15], [KEY]), audit_rules([10], [KEY])
    for rule in theirs:
        auditctl(*shlex.split(str(rule)))
    notices: list[str] = []
    with AuditSource(theirs + mine, notices.append):
        assert rule_lines() == rules_before + [str(r) for r in theirs + mine]
    assert rule_lines() == rules_before + [str(r) for r in theirs]
    assert sum("already present" in n for n in notices) == len(theirs)


def test_locked_audit_is_refused(monkeypatch):
    """enabled=2 cannot be produced and undone without a reboot: the status is faked."""
    real_status = AuditNetlink.status
    monkeypatch.setattr(AuditNetlink, "status", lambda self: {**real_status(self), "enabled": 2})
    before = rule_lines(), enabled_flag()
    with pytest.raises(OSError, match="locked"), AuditSource(audit_rules([15], [KEY]), print):
        pass
    assert (rule_lines(), enabled_flag()) == before


KILLER = textwrap.dedent("""
    import json, os, signal, subprocess, time
    sleeper = subprocess.Popen(["sleep", "30"])
    while open(f"/proc/{sleeper.pid}/comm").read() != "sleep\\n":  # exec can lag Popen
        time.sleep(0.001)
    os.kill(sleeper.pid, signal.SIGTERM)
    sleeper.wait()
    print(json.dumps({"pid": os.getpid(), "target": sleeper.pid}))
""")


PRINTK_RATELIMIT = Path("/proc/sys/kernel/printk_ratelimit")  # seconds


def kmsg_audit_lines(fd: int) -> list[str]:
    """`audit: type=N audit(...): ...` lines the kernel printed since `fd` was opened."""
    lines = []
    while True:
        try:
            entry = os.read(fd, 8192).decode(errors="surrogateescape")
        except BlockingIOError:
            return lines
        except BrokenPipeError:  # overwritten entries: keep reading
            continue
        msg = entry.split(";", 1)[1].split("\n", 1)[0]
        if msg.startswith("audit: type="):
            lines.append(msg[len("audit: "):])


def test_kill_event_relayed_verbatim(audit_state, tmp_path: Path):
    with AuditNetlink() as nl:
        auditd_running = nl.status()["pid"] != 0
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)
    try:
        with AuditSource(audit_rules([15], [KEY]), lambda _m: None) as src:
            if not auditd_running:
                # the kernel prints records through printk_ratelimit() (a burst of 10 per
                # 5 s); the records of our own rule additions used it up
                time.sleep(int(PRINTK_RATELIMIT.read_text()) + 0.5)
            # a fresh process: only tasks forked after audit is enabled have an audit context
            out = subprocess.run([sys.executable, "-c", KILLER], capture_output=True,
                                 text=True, check=True, timeout=30)
            pids = json.loads(out.stdout)

            def is_ours(ev: record.Event) -> bool:
                sc = ev.records[0]
                return (sc.type == "SYSCALL" and sc.get("pid") == str(pids["pid"])
                        and sc.get("syscall") == "62")

            events = [e for e in wait_events(src, is_ours) if is_ours(e)]
        assert len(events) == 1, "no kill event relayed"
        ev = events[0]
        assert ev.source == "audit"
        assert [r.type for r in ev.records] == ["SYSCALL", "OBJ_PID", "PROCTITLE"]
        sc, obj, _title = ev.records
        assert sc.get("arch") == "c000003e"
        assert sc.get("a0") == format(pids["target"], "x")
        assert sc.get("a1") == "f"
        assert sc.get("key") == f'"{KEY}"'
        assert obj.get("opid") == str(pids["target"])
        assert obj.get("ocomm") == '"sleep"'

        # verbatim: the kernel printed the same records to its log (no auditd to take them)
        if not auditd_running:
            time.sleep(0.2)
            kernel_lines = [ln for ln in kmsg_audit_lines(kmsg)
                            if f"audit({record.stamp(ev)})" in ln]
            ours = [f"type={record.record_type_number(r.type)} audit({record.stamp(ev)}): "
                    f"{r.body}" for r in ev.records]
            assert kernel_lines == ours

        # ausearch reads the relayed event as this kill, with the kernel's identity
        log = tmp_path / "audit.log"
        log.write_text(record.format_raw(ev) + "\n")
        found = subprocess.run(["ausearch", "-if", str(log), "-sc", "kill", "-p",
                                str(pids["pid"]), "-k", KEY, "--raw"],
                               capture_output=True, text=True, timeout=30)
        assert found.returncode == 0, found.stderr
        assert found.stdout.split() == record.format_raw(ev).split()
    finally:
        os.close(kmsg)


EXIT_PATH = textwrap.dedent("""
    import os, signal, sys, time
    from audtrace.tracer.audit.source import AuditSource
    from audtrace.tracer.subcommands.kill import audit_rules
    mode, key = sys.argv[1], sys.argv[2]
    src = AuditSource(audit_rules([15], [key]), on_notice=lambda m: None)
    if mode == "own-handler":  # an application handler that closes the source itself
        def stop(signum, frame):
            src.close()
            os._exit(7)
        signal.signal(signal.SIGTERM, stop)
    with src:
        print("ready", flush=True)
        if mode == "raise":
            raise RuntimeError("boom")
        time.sleep(60)
""")


@pytest.mark.parametrize("mode, sig, returncode", [
    ("sigterm", signal.SIGTERM, 128 + signal.SIGTERM),
    ("sigint", signal.SIGINT, -signal.SIGINT),  # KeyboardInterrupt, re-raised
    ("own-handler", signal.SIGTERM, 7),
    ("raise", None, 1),
])
def test_exit_paths_restore(audit_state, mode, sig, returncode):
    enabled_before, rules_before = audit_state
    proc = subprocess.Popen([sys.executable, "-c", EXIT_PATH, mode, KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        if sig is not None:
            assert len(rule_lines()) > len(rules_before)  # the rules are in
            assert enabled_flag() == 1
            proc.send_signal(sig)
        assert proc.wait(timeout=30) == returncode, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rule_lines() == rules_before
    assert enabled_flag() == enabled_before


FLOOD = textwrap.dedent("""
    import os
    for _ in range(3000):
        os.getppid()
""")


def test_receive_overflow_is_counted_and_survived(audit_state):
    flood = Rule(syscalls=[110], fields=[("arch", "=", "b64"), ("key", "=", KEY)])
    with AuditSource([flood] + audit_rules([15], [KEY]), lambda _m: None, rcvbuf=4096) as src:
        subprocess.run([sys.executable, "-c", FLOOD], check=True, timeout=60)
        time.sleep(0.5)  # let kauditd deliver into the (too small) socket buffer
        wait_events(src, lambda _e: False, timeout=0.5)
        assert src.lost().overruns >= 1
        # the socket still works after ENOBUFS
        out = subprocess.run([sys.executable, "-c", KILLER], capture_output=True, text=True,
                             check=True, timeout=30)
        pid = str(json.loads(out.stdout)["pid"])
        events = wait_events(src, lambda e: e.records[0].get("pid") == pid)
        assert any(e.records[0].get("syscall") == "62" and e.records[0].get("pid") == pid
                   for e in events)
