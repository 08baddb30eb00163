"""`audtrace daemon` under systemd as PID 1, driven as an administrator drives it: the unit
`audtrace daemon --install-unit` writes, `systemctl start` (Type=notify: it returns once
READY=1 says every probe and rule is live), `systemctl reload` (SIGHUP: the new configuration
in force, nothing lost across it), `systemctl stop` (exit 0, the kernel's audit state as
before). One daemon start for the three: under emulation each BCC compile takes a minute or
two. Where systemd is not PID 1 the `systemd` marker skips it; vagrant/vm-lane's `systemd` run
hands its guest's PID 1 over to systemd for it."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import (
    REPO,
    START_TIMEOUT,
    audit_rules,
    bpf_prog_ids,
    bpf_prog_ids_held,
    ignoring_target,
    leaked_bpf_progs,
    paced_sender,
    system_state,
    wait_for,
)
from test_daemon import QUIET, config, send

pytestmark = [pytest.mark.kernel, pytest.mark.systemd]

UNIT = "audtrace.service"
UNIT_FILE = Path("/etc/systemd/system") / UNIT     # where --install-unit writes by default
NODE = "lane-reloaded"      # the node name the reloaded configuration gives every record


def systemctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=timeout)


def show(*props: str) -> dict[str, str]:
    r = systemctl("show", UNIT, "-p", ",".join(props))
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def journal() -> str:
    """The daemon's stderr as systemd keeps it (the unit's lines of this boot's journal)."""
    r = subprocess.run(["journalctl", "-b", "-u", UNIT, "-o", "cat", "--no-pager"],
                       capture_output=True, text=True, timeout=120)
    return r.stdout + r.stderr


def syscalls(log: Path, pid: int, *extra: str) -> int | None:
    """SYSCALL records of process `pid` in the log, as the real ausearch finds them (None
    when ausearch fails: the log is checked again)."""
    r = subprocess.run(["ausearch", "-if", str(log), "-m", "SYSCALL", "-p", str(pid), "--raw",
                        *extra], capture_output=True, text=True, timeout=120)
    if r.returncode == 1 and "<no matches>" in r.stderr:
        return 0
    if r.returncode != 0:
        return None
    return sum(" type=SYSCALL " in f" {line} " for line in r.stdout.splitlines())


@contextmanager
def installed_unit(conf: Path) -> Iterator[str]:
    """`audtrace daemon --install-unit --config CONF`, as the README says; yields the unit's
    text. On every way out the service is stopped, the unit file removed and systemd told:
    nothing stays."""
    r = subprocess.run([str(REPO / "audtrace"), "daemon", "--install-unit", "--config",
                        str(conf)], capture_output=True, text=True, cwd=REPO, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        assert f"wrote {UNIT_FILE}" in r.stderr, r.stderr
        yield UNIT_FILE.read_text()
    finally:
        systemctl("stop", UNIT)
        systemctl("reset-failed", UNIT)
        UNIT_FILE.unlink(missing_ok=True)
        UNIT_FILE.with_name(UNIT + ".new").unlink(missing_ok=True)
        systemctl("daemon-reload")


def test_start_reload_stop_through_systemctl(tmp_path):
    if UNIT_FILE.exists() or show("LoadState")["LoadState"] != "not-found":
        pytest.skip(f"{UNIT} is installed here already; this test would replace it")
    # systemd mounts debugfs: the tracefs the kernel mounts below it when BCC looks there
    # is audtrace's to remove as well (compared with the mounts below)
    before = system_state()
    log = tmp_path / "log" / "audit.log"
    with ignoring_target(signal.SIGUSR2) as target:
        trace = f"trace = kill --source both --sig 15,12 --target-pid {target}\n"
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\n{QUIET}{trace}")
        with installed_unit(conf) as text:
            assert f"\nExecStart={REPO / 'audtrace'} daemon --config {conf}\n" in text, text
            assert "\nType=notify\n" in text
            assert systemctl("daemon-reload").returncode == 0
            assert show("LoadState", "ActiveState") == {"LoadState": "loaded",
                                                        "ActiveState": "inactive"}

            # start: Type=notify, so systemctl returns once READY=1 came, every rule live
            r = systemctl("start", UNIT, timeout=START_TIMEOUT + 120)
            assert r.returncode == 0, r.stderr + journal()
            sender = send(target, signal.SIGUSR2, 1)
            started = show("ActiveState", "SubState", "MainPID", "StatusText")
            assert (started["ActiveState"], started["SubState"]) == ("active", "running")
            assert started["StatusText"].startswith("tracing kill"), f"{started}\n{journal()}"
            main = int(started["MainPID"])
            # the daemon itself is the main process (each exec of the launcher kept the pid)
            assert b"audtrace.tracer.cli" in Path(f"/proc/{main}/cmdline").read_bytes()
            held = bpf_prog_ids_held(main)
            rules = audit_rules()
            # both sources: the eBPF program's event and kernel audit's
            assert wait_for(lambda: syscalls(log, sender) == 2, timeout=60), \
                f"{syscalls(log, sender)}\n{journal()}"

            # reload: a node name from now on; a sender keeps going across it
            config(conf, f"log_file = {log}\n{QUIET}name_format = user\nname = {NODE}\n{trace}")
            with paced_sender(target, 50) as steady:
                time.sleep(1)
                r = systemctl("reload", UNIT)
                assert r.returncode == 0, r.stderr + journal()
                # in force: the sender's events now come with node=NODE
                assert wait_for(lambda: (syscalls(log, steady["pid"], "--node", NODE) or 0) > 0,
                                timeout=START_TIMEOUT), journal()
                time.sleep(1)
            later = send(target, signal.SIGUSR2, 3)
            assert wait_for(lambda: syscalls(log, later, "--node", NODE) == 6, timeout=60), \
                f"{syscalls(log, later)}\n{journal()}"
            assert wait_for(lambda: syscalls(log, steady["pid"]) == 2 * steady["sent"],
                            timeout=60), f"{steady} {syscalls(log, steady['pid'])}\n{journal()}"
            reloaded = show("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts")
            assert reloaded == {"ActiveState": "active", "SubState": "running",
                                "MainPID": str(main), "StatusText": started["StatusText"],
                                "NRestarts": "0"}, f"{reloaded}\n{journal()}"

            # stop: SIGTERM; the daemon puts everything back and exits 0. Inactive, not
            # failed: any other end would leave the unit failed, its result kept. (Once
            # inactive the unit is unloaded, its exit status with it: `systemctl show`
            # then reads defaults, so the journal tells the rest.)
            r = systemctl("stop", UNIT)
            assert r.returncode == 0, r.stderr + journal()
            stopped = show("ActiveState", "SubState")
            assert stopped == {"ActiveState": "inactive", "SubState": "dead"}, \
                f"{stopped}\n{journal()}"
            assert systemctl("is-failed", UNIT).stdout.strip() == "inactive"
            assert wait_for(lambda: "Deactivated successfully" in journal(), timeout=60), \
                journal()
            said = journal()
    assert show("LoadState")["LoadState"] == "not-found"    # the unit is gone
    assert not UNIT_FILE.exists()
    assert held, "the daemon held no BPF program"
    assert rules != before.audit_rules and "kill" in rules, rules   # the rule was live
    assert system_state() == before, "audit rules, enabled flag, mounts or /run/audtrace changed"
    assert not held & bpf_prog_ids() and not leaked_bpf_progs(before.progs)
    assert sender != later and steady["sent"] > 10, steady
    assert "configuration reloaded: slots 1 kept, 0 replaced" in said, said
    # the totals the daemon writes last, on its orderly way out: no event lost by the eBPF
    # side or the log. (Kernel audit's events are all there, as ausearch found; its count is
    # the kernel's lost counter, which also counts records dropped from the queue kept for an
    # auditd to come when audit=1 is on the kernel's command line, as in the lane.)
    assert re.search(r"lost: ebpf 0, audit \d+, log 0", said), said
    # what systemd says of a main process that ends otherwise than by exit 0 or SIGTERM
    assert "Main process exited" not in said and "Traceback" not in said, said
