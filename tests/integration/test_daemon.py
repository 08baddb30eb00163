"""`audtrace daemon` as systemd runs it: READY=1 on a real notify socket once every probe
and rule is live, rotation by size under a storm, SIGUSR1, the real logrotate with the
shipped recipe, SIGHUP reload under a storm (no event lost or doubled, the new
configuration in force), SIGTERM (audit state put back, exit 0), the disk-full actions on a
small tmpfs, and the shipped unit through `systemd-analyze verify`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from audtrace.compat.record import parse_line, split_fields
from helpers import (
    PYTHON,
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
from test_disk_full import (
    STORM,
    _die_with_parent,
    ausearch_reads,
    fill,
    read_log,
    small_disk,
    storm,
)

pytestmark = pytest.mark.kernel

QUIET = "space_left = 0\nadmin_space_left = 0\n"    # no space warnings on a small disk


@dataclass
class Daemon:
    proc: subprocess.Popen
    stderr: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)     # sd_notify datagrams, in order
    threads: list[threading.Thread] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self.threads:
            t.join(timeout=5)
        return rc

    def said(self, text: str) -> bool:
        return any(text in s for s in self.stderr)

    def summary(self) -> dict[str, int]:
        import re

        line = next(s for s in self.stderr if "events (" in s)
        m = re.search(r"lost: ebpf (\d+), audit (\d+), log (\d+)", line)
        assert m, line
        return {"ebpf": int(m[1]), "audit": int(m[2]), "log": int(m[3])}

    def text(self) -> str:
        return "\n".join(self.stderr)


@contextmanager
def daemon(conf: Path, mount_ns_of: int | None = None) -> Iterator[Daemon]:
    """`audtrace daemon --config CONF` with NOTIFY_SOCKET set to a datagram socket of the
    test's: yields once READY=1 arrives (the test fails if it never does). Stopped (and
    killed if need be) at the end, whatever happens."""
    sock_dir = tempfile.mkdtemp(prefix="audtrace-notify-")    # short: sun_path is 108 bytes
    sock_path = os.path.join(sock_dir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    cmd = [str(REPO / "audtrace"), "daemon", "--config", str(conf)]
    if mount_ns_of is not None:
        cmd = ["nsenter", "-t", str(mount_ns_of), "-m", "--", *cmd]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=REPO, env={**os.environ, "NOTIFY_SOCKET": sock_path})
    d = Daemon(proc)
    ready = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            d.stderr.append(line.rstrip("\n"))

    def read_notify() -> None:
        while proc.poll() is None or not ready.is_set():
            try:
                msg = sock.recv(4096).decode()
            except TimeoutError:
                if proc.poll() is not None:
                    break
                continue
            d.notified.append(msg)
            if "READY=1" in msg.split("\n"):
                ready.set()
        ready.set()

    d.threads = [threading.Thread(target=read_stderr, daemon=True),
                 threading.Thread(target=read_notify, daemon=True)]
    for t in d.threads:
        t.start()
    try:
        if not ready.wait(START_TIMEOUT) or proc.poll() is not None:
            pytest.fail("the daemon never said READY=1:\n" + d.text())
        yield d
    finally:
        d.stop()
        sock.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def kill_line(target: int, sigs: str = "USR2") -> str:
    return f"trace = kill --sig {sigs} --target-pid {target}\n"


def send(target: int, sig: int, n: int) -> int:
    """n signals to target from a fresh process; the sender's pid."""
    r = subprocess.run([PYTHON, "-c", f"import os\nfor _ in range({n}): os.kill({target}, {sig})"
                        "\nprint(os.getpid())"], capture_output=True, text=True, check=True)
    return int(r.stdout)


@dataclass
class Events:
    kills: dict[tuple[int, int], int]      # (sender pid, signal) -> events
    serials: set[tuple[str, str, str]]     # (seconds, milliseconds, serial) of every event


def events(path: Path) -> Events:
    """Every event of one log file: whole lines, each event's records all in this file
    (SYSCALL, OBJ_PID and PROCTITLE of one stamp)."""
    out = Events({}, set())
    if not path.exists() or path.stat().st_size == 0:
        return out
    read_log(path)                                      # every line whole and parsable
    types: dict[tuple, list[str]] = {}
    for line in path.read_text().splitlines():
        _node, rtype, sec, msec, serial, body = parse_line(line)
        types.setdefault((sec, msec, serial), []).append(rtype)
        if rtype == "SYSCALL":
            f = dict(split_fields(body))
            key = (int(f["pid"]), int(f["a1"], 16))
            out.kills[key] = out.kills.get(key, 0) + 1
    for stamp, got in types.items():
        if "SYSCALL" in got:
            assert got == ["SYSCALL", "OBJ_PID", "PROCTITLE"], (path, stamp, got)
    out.serials = set(types)
    return out


def every_log(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit.log*"))


def test_ready_once_tracing_and_sigterm_restores_audit_state(tmp_path):
    """READY=1 comes once the probes and the kernel audit rule are live: a signal sent
    right after it is in the log, from both sources; SIGTERM puts everything back, exit 0."""
    before = system_state()
    log = tmp_path / "log" / "audit.log"
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\n{QUIET}"
                      f"trace = kill --source both --sig USR2 --target-pid {target}\n")
        with daemon(conf) as d:
            held = bpf_prog_ids_held(d.proc.pid)
            rules = subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout
            sender = send(target, signal.SIGUSR2, 1)
            assert wait_for(lambda: events(log).kills.get((sender, 12)) == 2), d.text()
            assert d.notified[0].split("\n")[0] == "READY=1"
            assert d.said("audtrace: tracing kill")
            rc = d.stop()
            assert rc == 0, d.text()
    assert held, "the daemon held no BPF program"
    assert rules != before.audit_rules and "kill" in rules, rules   # the rule was live
    assert "STOPPING=1" in d.notified[-1]
    after = system_state()
    assert after == before, "audit rules, enabled flag, mounts or /run/audtrace changed"
    assert not held & bpf_prog_ids() and not leaked_bpf_progs(before.progs)
    assert log.stat().st_mode & 0o777 == 0o600
    assert not d.said("Traceback")


def test_rotation_during_a_storm_keeps_every_event_whole(tmp_path):
    """max_log_file = 1 under a storm of several MiB: audit.log.N ... audit.log, every event
    present once across them, none split between two files; ausearch reads each."""
    log_dir = tmp_path / "log"
    log = log_dir / "audit.log"
    n = 3 * STORM
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nmax_log_file = 1\n"
                      f"num_logs = 99\n{QUIET}{kill_line(target)}")
        with daemon(conf) as d:
            sender = storm(target, n)
            assert wait_for(lambda: sum(events(p).kills.get((sender, 12), 0)
                                        for p in every_log(log_dir)) >= n, timeout=30)
            assert d.stop() == 0, d.text()
    files = every_log(log_dir)
    assert len(files) >= 3, files
    seen: set = set()
    total = 0
    for p in files:
        e = events(p)
        assert not e.serials & seen, f"an event in two files: {p}"
        seen |= e.serials
        total += e.kills.get((sender, 12), 0)
        if p != log:
            assert p.stat().st_mode & 0o777 == 0o400, p    # rotated: read-only, as auditd
            assert p.stat().st_size >= 1 << 20
    ausearch_reads(files[1])
    assert total == n
    assert d.summary() == {"ebpf": 0, "audit": 0, "log": 0}


def test_sigusr1_rotates_now_with_the_configured_group(tmp_path):
    import grp

    log = tmp_path / "audit.log"
    group = next((g for g in ("adm", "daemon") if _has_group(g)), None)
    if group is None:
        pytest.skip("needs a group adm or daemon")
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nlog_group = {group}\n"
                      f"{QUIET}{kill_line(target)}")
        with daemon(conf) as d:
            first = send(target, signal.SIGUSR2, 5)
            assert wait_for(lambda: events(log).kills.get((first, 12)) == 5)
            d.proc.send_signal(signal.SIGUSR1)
            assert wait_for(lambda: (tmp_path / "audit.log.1").exists()), d.text()
            second = send(target, signal.SIGUSR2, 3)
            assert wait_for(lambda: events(log).kills.get((second, 12)) == 3)
            assert d.stop() == 0
    assert events(tmp_path / "audit.log.1").kills == {(first, 12): 5}
    assert events(log).kills == {(second, 12): 3}
    assert d.said("rotated (SIGUSR1)")
    gid = grp.getgrnam(group).gr_gid
    for path, mode in ((log, 0o640), (tmp_path / "audit.log.1", 0o440)):
        st = path.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (mode, gid), path


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_sighup_reload_under_a_storm_loses_nothing_and_puts_the_new_rules_in_force(tmp_path):
    """The storm runs across the reload: every one of its events is in the log exactly once
    (the old and the new program overlap; what both saw is written once), and the new
    trace line (SIGUSR1 too) is in force once READY=1 says the reload is done."""
    log = tmp_path / "audit.log"
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nnum_logs = 99\n{QUIET}"
                      f"{kill_line(target)}")
        with daemon(conf) as d:
            before = send(target, signal.SIGUSR1, 5)        # not traced yet
            with paced_sender(target, 5000, batch=50) as s:
                time.sleep(1)
                config(conf, f"log_file = {log}\nnum_logs = 99\n{QUIET}"
                       f"{kill_line(target, 'USR2,USR1')}")
                readies = sum("READY=1" in m for m in d.notified)
                d.proc.send_signal(signal.SIGHUP)
                assert wait_for(lambda: sum("READY=1" in m for m in d.notified) > readies,
                                timeout=START_TIMEOUT), d.text()
                time.sleep(1)
            after = send(target, signal.SIGUSR1, 7)
            assert wait_for(lambda: events(log).kills.get((after, 10)) == 7), d.text()
            assert d.stop() == 0, d.text()
    got: dict = {}
    for p in every_log(tmp_path):       # the storm fills more than one max_log_file
        for k, n in events(p).kills.items():
            got[k] = got.get(k, 0) + n
    assert s["sent"] > 5000
    assert got.get((s["pid"], 12)) == s["sent"], (s, got.get((s["pid"], 12)), d.text())
    assert (before, 10) not in got
    assert any(m.startswith("RELOADING=1") for m in d.notified)
    assert d.said("configuration reloaded: slots 0 kept, 1 replaced")
    assert d.summary() == {"ebpf": 0, "audit": 0, "log": 0}
    assert not d.said("Traceback")


def test_a_bad_configuration_at_reload_keeps_the_one_in_force(tmp_path):
    log = tmp_path / "audit.log"
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\n{QUIET}"
                      f"{kill_line(target)}")
        with daemon(conf) as d:
            config(conf, f"log_file = {log}\nflush = sometimes\n{kill_line(target)}")
            d.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: d.said("reload refused")), d.text()
            sender = send(target, signal.SIGUSR2, 4)
            assert wait_for(lambda: events(log).kills.get((sender, 12)) == 4)
            assert d.stop() == 0
    line = next(s for s in d.stderr if "reload refused" in s)
    assert f"{conf}:2: flush: 'sometimes'" in line


def test_a_bad_configuration_is_one_line_and_nothing_starts(tmp_path):
    conf = config(tmp_path / "audtrace.conf", "log_file = /tmp/x.log\ntrace = kill --sig 99\n")
    before = system_state()
    r = subprocess.run([str(REPO / "audtrace"), "daemon", "--config", str(conf)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1
    lines = [s for s in r.stderr.splitlines() if not s.startswith("audtrace setup")]
    assert lines == [f"audtrace: {conf}:2: trace: kill: --sig: signal number out of range"
                     " (0..64): '99'"]
    assert system_state() == before


@pytest.mark.parametrize("action", ["ignore", "syslog", "suspend", "rotate", "exec", "stop"])
def test_disk_full_under_each_action(tmp_path, action):
    """The log on a full 1 MiB tmpfs: whole events only, every event not written counted,
    the daemon alive (ignore, syslog, suspend, rotate, exec) or stopped with everything put
    back (stop)."""
    marker = tmp_path / "exec-ran"
    extra = ""
    if action == "exec":
        program = tmp_path / "on-full"
        program.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
        program.chmod(0o755)
        action = f"exec {program}"
    elif action == "rotate":
        extra = "num_logs = 3\n"
    with small_disk(tmp_path) as disk, ignoring_target(signal.SIGUSR2) as target:
        fill(disk)
        conf = config(tmp_path / "audtrace.conf", f"log_file = {disk.inside}/audit.log\n"
                      f"disk_full_action = {action}\n{extra}{QUIET}{kill_line(target)}")
        mounts, progs = disk.tracing_mounts(), bpf_prog_ids()
        with daemon(conf, mount_ns_of=disk.holder.pid) as d:
            held = bpf_prog_ids_held(d.proc.pid)
            sender = storm(target, STORM)
            if action == "stop":
                rc = d.proc.wait(timeout=60)
            else:
                assert wait_for(lambda: d.said("No space left")), d.text()
                time.sleep(1.5)
                assert d.proc.poll() is None, d.text()      # alive, as configured
                rc = d.stop()
            for t in d.threads:
                t.join(timeout=5)
            current = disk.path("audit.log")
            # whole lines only (rotation may have just left the current log empty)
            log_lost = sum(read_log(current).lost.get("log", [])) \
                if current.stat().st_size else 0
            written = events(current).kills.get((sender, 12), 0)
            if current.stat().st_size:
                ausearch_reads(current)
            for n in (1, 2):
                rotated = disk.path(f"audit.log.{n}")
                if rotated.exists():
                    written += events(rotated).kills.get((sender, 12), 0)
            after_mounts = disk.tracing_mounts()
    assert not d.said("Traceback"), d.text()
    lost = d.summary()
    assert 0 < written < STORM and lost["log"] > 0
    if action == "stop":
        assert rc == 1, d.text()
        assert d.said("tracing stopped (disk-full action stop)")
        assert after_mounts == mounts
        assert not held & bpf_prog_ids() and not leaked_bpf_progs(progs)
    else:
        assert rc == 0, d.text()
        if action == "rotate":      # rotation gives up the oldest log's events to make room
            assert d.said("rotating the log") and written + lost["log"] <= STORM
        else:
            assert written + lost["log"] + lost["ebpf"] == STORM, (written, lost)
        assert log_lost <= lost["log"]
    if action == "suspend":
        assert d.said("suspended")
    if action.startswith("exec"):
        assert marker.read_text() == "ran\n"


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("needs systemd-analyze")
    r = subprocess.run(["systemd-analyze", "verify", str(REPO / "packaging/audtrace.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    installed = subprocess.run([str(REPO / "audtrace"), "daemon", "--install-unit", "--unit-dir",
                                str(tmp_path), "--config", "/etc/audtrace/audtrace.conf"],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
    assert installed.returncode == 0, installed.stderr
    unit = tmp_path / "audtrace.service"
    assert f"ExecStart={REPO / 'audtrace'} daemon --config /etc/audtrace/audtrace.conf\n" \
        in unit.read_text()
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_every_event_also_goes_to_the_plugins(tmp_path):
    """plugin_dir's active plugin (a program copying its stdin to a file) gets each event
    the log gets, as RAW lines, from the daemon's start to its end."""
    plugins = tmp_path / "plugins.d"
    plugins.mkdir()
    program = tmp_path / "copy-stdin"
    # SIGHUP, auditd's "reload your configuration", is ignored by this plugin
    program.write_text("#!/bin/sh\ntrap '' HUP\nexec cat >> \"$1\"\n")
    program.chmod(0o750)
    got = tmp_path / "plugin-got"
    conf_file = plugins / "copy.conf"
    conf_file.write_text(f"active = yes\ndirection = out\npath = {program}\ntype = always\n"
                         f"args = {got}\nformat = string\n")
    conf_file.chmod(0o640)
    log = tmp_path / "audit.log"
    got2 = tmp_path / "plugin-got-2"
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nplugin_dir = {plugins}\n"
                      f"{QUIET}{kill_line(target)}")
        with daemon(conf) as d:
            sender = send(target, signal.SIGUSR2, 6)
            assert wait_for(lambda: events(log).kills.get((sender, 12)) == 6), d.text()
            # a second plugin, then SIGHUP: started; the first one goes on
            second = plugins / "second.conf"
            second.write_text(conf_file.read_text().replace(str(got), str(got2)))
            second.chmod(0o640)
            d.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: d.said("configuration reloaded"), timeout=START_TIMEOUT), \
                d.text()
            later = send(target, signal.SIGUSR2, 4)
            assert wait_for(lambda: events(log).kills.get((later, 12)) == 4), d.text()
            assert d.stop() == 0, d.text()
    lines = got.read_text().splitlines()
    syscalls = [ln for ln in lines if ln.startswith("type=SYSCALL") and f" pid={sender} " in ln]
    assert len(syscalls) == 6
    assert sum(ln.startswith("type=EOE") for ln in lines) >= 10
    assert [ln for ln in lines if not ln.startswith("type=EOE")] == log.read_text().splitlines()
    lines2 = got2.read_text().splitlines()
    assert sum(ln.startswith("type=SYSCALL") and f" pid={later} " in ln for ln in lines2) == 4
    assert not any(f" pid={sender} " in ln for ln in lines2)
    assert "plugins 0" in next(s for s in d.stderr if "events (" in s)


def test_reload_changes_kernel_audit_rules_in_place_and_sigterm_puts_them_back(tmp_path):
    """A trace line on both sources changed at reload: its new kernel audit rule is added,
    the old one removed once the new one is live; the signal it adds is reported by both
    sources; at SIGTERM the kernel's rules and enabled flag are as before the daemon."""
    before = system_state()
    log = tmp_path / "audit.log"

    def line(sigs: str, target: int, source: str = "both") -> str:
        return f"trace = kill --source {source} --sig {sigs} --target-pid {target}\n"

    def reload(text: str, nth: int) -> None:
        config(conf, f"log_file = {log}\n{QUIET}{text}")
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: sum("configuration reloaded" in s for s in d.stderr) == nth,
                        timeout=START_TIMEOUT), d.text()

    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\n{QUIET}"
                      f"{line('USR2', target, 'ebpf')}")
        with daemon(conf) as d:
            assert audit_rules() == before.audit_rules
            reload(line("USR2", target), 1)        # the run's first kernel audit rules
            first_rules = audit_rules()
            reload(line("USR2,USR1", target), 2)   # changed in place
            second_rules = audit_rules()
            sender = send(target, signal.SIGUSR1, 3)
            assert wait_for(lambda: events(log).kills.get((sender, 10)) == 6), d.text()
            assert d.stop() == 0, d.text()
    assert first_rules != before.audit_rules and second_rules not in (first_rules,
                                                                      before.audit_rules)
    assert system_state() == before
    assert not d.said("Traceback")


def test_reload_reads_the_rules_directory_again(tmp_path):
    """A rule file edited, then SIGHUP: the new rule is in force (its key in the log), the
    one kept goes on."""
    rules = tmp_path / "rules.d"
    rules.mkdir()
    log = tmp_path / "audit.log"
    with ignoring_target(signal.SIGUSR2) as target:
        base = f"-a always,exit -F arch=b64 -S kill -F a0={target}"
        (rules / "10-usr2.rules").write_text(f"-D\n{base} -F a1=12 -k daemon-usr2\n")
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\n{QUIET}"
                      f"rules_dir = {rules}\n")
        with daemon(conf) as d:
            (rules / "20-usr1.rules").write_text(f"{base} -F a1=10 -k daemon-usr1\n")
            d.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: d.said("configuration reloaded"), timeout=START_TIMEOUT), \
                d.text()
            usr1 = send(target, signal.SIGUSR1, 2)
            usr2 = send(target, signal.SIGUSR2, 3)

            def keyed(key: str, pid: int) -> int:
                return sum(1 for ln in log.read_text().splitlines() if ln.startswith(
                    "type=SYSCALL") and f" pid={pid} " in ln and f'key="{key}"' in ln)

            assert wait_for(lambda: keyed("daemon-usr1", usr1) == 2
                            and keyed("daemon-usr2", usr2) == 3), d.text()
            assert d.stop() == 0, d.text()
    assert d.said("slots 0 kept, 1 replaced")


def test_space_left_actions_on_a_small_disk(tmp_path):
    """space_left (SYSLOG) and admin_space_left (SUSPEND) as percentages of a 1 MiB tmpfs
    filled to 75%: both act at start; the suspended log takes nothing, every event counted,
    until room is made and SIGUSR2 resumes it."""
    with small_disk(tmp_path) as disk, ignoring_target(signal.SIGUSR2) as target:
        filler = fill(disk)
        conf = config(tmp_path / "audtrace.conf", f"log_file = {disk.inside}/audit.log\n"
                      "space_left = 60%\nspace_left_action = syslog\nadmin_space_left = 40%\n"
                      f"admin_space_left_action = suspend\n{kill_line(target)}")
        with daemon(conf, mount_ns_of=disk.holder.pid) as d:
            unwritten = send(target, signal.SIGUSR2, 20)
            assert wait_for(lambda: d.said("below space_left")
                            and d.said("below admin_space_left")), d.text()
            time.sleep(1.5)
            assert events(disk.path("audit.log")).kills == {}
            filler.unlink()
            d.proc.send_signal(signal.SIGUSR2)              # as `auditd resume`
            assert wait_for(lambda: d.said("writing resumed")), d.text()
            written = send(target, signal.SIGUSR2, 5)
            assert wait_for(lambda: events(disk.path("audit.log")).kills.get((written, 12))
                            == 5), d.text()
            assert d.stop() == 0, d.text()
            got = events(disk.path("audit.log")).kills
    assert (unwritten, 12) not in got
    assert d.summary()["log"] == 20


def ausearch_syscalls(path: Path, pid: int) -> int:
    """How many SYSCALL records of `pid` the real ausearch finds in the file (0 if none)."""
    r = subprocess.run(["ausearch", "-if", str(path), "-p", str(pid), "--raw"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1) and "Malformed" not in r.stderr, r.stderr[-2000:]
    return sum(ln.startswith("type=SYSCALL") for ln in r.stdout.splitlines())


SHIPPED_POSTROTATE = ("if systemctl -q is-active audtrace.service; then systemctl kill"
                      " --signal=USR1 --kill-who=main audtrace.service; fi")


def logrotate_conf(tmp_path: Path, log: Path, daemon_pid: int) -> Path:
    """The shipped packaging/audtrace.logrotate for this log, its postrotate signalling this
    daemon (systemctl needs systemd as PID 1, which this machine does not run)."""
    text = (REPO / "packaging/audtrace.logrotate").read_text()
    assert text.count("/var/log/audtrace/audit.log {") == 1 and SHIPPED_POSTROTATE in text
    conf = tmp_path / "logrotate.conf"
    conf.write_text(text.replace("/var/log/audtrace/audit.log {", f"{log} {{")
                    .replace(SHIPPED_POSTROTATE, f"kill -USR1 {daemon_pid}"))
    return conf


@pytest.mark.skipif(not shutil.which("logrotate") or not shutil.which("ausearch"),
                    reason="needs logrotate and ausearch (scripts/setup.sh --test)")
def test_logrotate_with_the_shipped_recipe_loses_and_splits_nothing(tmp_path):
    """The real logrotate, forced twice with the shipped recipe (its own state file), while
    a storm runs across the first: logrotate renames audit.log, the daemon writes on into
    the renamed file until postrotate's SIGUSR1, then opens a new audit.log. Every event is
    in exactly one of audit.log, .1, .2 (none split), the real ausearch finds each file's,
    the daemon writes on into the new file, rotated files read-only as auditd's."""
    shipped = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "dry-state"),
                              str(REPO / "packaging/audtrace.logrotate")],
                             capture_output=True, text=True, timeout=60)
    assert shipped.returncode == 0 and "error" not in shipped.stderr.lower(), shipped.stderr
    log_dir = tmp_path / "log"
    log = log_dir / "audit.log"
    state = tmp_path / "logrotate.state"
    with ignoring_target(signal.SIGTERM, signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\n"
                      f"max_log_file_action = ignore\n{QUIET}"
                      f"trace = kill --sig 15,12 --target-pid {target}\n")
        with daemon(conf) as d:
            rotate = logrotate_conf(tmp_path, log, d.proc.pid)

            def logrotate(nth: int) -> None:
                r = subprocess.run(["logrotate", "-f", "-s", str(state), str(rotate)],
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode == 0, r.stderr
                assert wait_for(lambda: sum("reopened (SIGUSR1)" in s for s in d.stderr)
                                == nth), d.text()

            first = send(target, signal.SIGTERM, 5)
            assert wait_for(lambda: events(log).kills.get((first, 15)) == 5), d.text()
            with paced_sender(target, 2000, batch=50) as s:
                time.sleep(0.5)
                logrotate(1)
                time.sleep(0.5)
            middle = send(target, signal.SIGTERM, 4)
            assert wait_for(lambda: events(log).kills.get((middle, 15)) == 4), d.text()
            logrotate(2)
            last = send(target, signal.SIGTERM, 3)
            assert wait_for(lambda: events(log).kills.get((last, 15)) == 3), d.text()
            assert d.stop() == 0, d.text()
    files = every_log(log_dir)
    assert [p.name for p in files] == ["audit.log", "audit.log.1", "audit.log.2"], files
    got = {p.name: events(p) for p in files}      # whole events, each one's records together
    seen: set = set()
    for p in files:
        assert not got[p.name].serials & seen, f"an event in two files: {p}"
        seen |= got[p.name].serials
    kills: dict = {}
    for e in got.values():
        for k, n in e.kills.items():
            kills[k] = kills.get(k, 0) + n
    assert s["sent"] > 500
    assert kills.get((s["pid"], 12)) == s["sent"], (s, kills.get((s["pid"], 12)))
    assert got["audit.log.2"].kills.get((first, 15)) == 5
    assert got["audit.log.1"].kills.get((middle, 15)) == 4
    assert got["audit.log"].kills == {(last, 15): 3}
    for p in files:
        for pid in (first, middle, last, s["pid"]):
            assert ausearch_syscalls(p, pid) == sum(
                n for (sender, _sig), n in got[p.name].kills.items() if sender == pid), (p, pid)
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {
        "audit.log": 0o600, "audit.log.1": 0o400, "audit.log.2": 0o400}
    assert d.summary() == {"ebpf": 0, "audit": 0, "log": 0}
    assert not d.said("Traceback")


@contextmanager
def private_syslog() -> Iterator[tuple[int, list[str]]]:
    """A mount namespace whose /dev is a tmpfs of its own (null, zero, random and urandom
    made in it) with the test's syslog socket at /dev/log, read all along: a daemon run in
    it (`daemon(conf, mount_ns_of=pid)`) logs there. The system's /dev is never touched.
    Yields the namespace holder's pid and the messages received."""
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs unshare and nsenter (util-linux)")
    script = ("mount -t tmpfs -o mode=755 audtrace-test-dev /dev && for d in 'null 3' 'zero 5'"
              " 'random 8' 'urandom 9'; do set -- $d; mknod -m 666 /dev/$1 c 1 $2 || exit 1;"
              " done && echo ready && exec sleep 600")
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], stdout=subprocess.PIPE, text=True,
                              preexec_fn=_die_with_parent)
    received: list[str] = []
    stop = threading.Event()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        assert holder.stdout.readline() == "ready\n", "could not make the private /dev"
        sock.bind(f"/proc/{holder.pid}/root/dev/log")
        sock.settimeout(0.1)

        def serve() -> None:
            while not stop.is_set():
                with suppress(TimeoutError):
                    received.append(sock.recv(65536).decode(errors="replace"))

        reader = threading.Thread(target=serve, daemon=True)
        reader.start()
        yield holder.pid, received
        stop.set()
        reader.join(timeout=5)
    finally:
        stop.set()
        sock.close()
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("action", ["ignore", "syslog", "suspend", "rotate", "keep_logs"])
def test_max_log_file_action(tmp_path, action):
    """max_log_file = 1 (MiB), num_logs = 2 and a storm of about 2.7 MiB, under each of
    auditd.conf(5)'s max_log_file_action values: IGNORE writes on into one file; SYSLOG too,
    with one warning to syslog; SUSPEND stops writing at the limit, the rest counted lost;
    ROTATE keeps num_logs files, losing the oldest; KEEP_LOGS rotates past num_logs, losing
    nothing. A rotated or suspended log ends with the event that reached the limit."""
    log_dir = tmp_path / "log"
    log = log_dir / "audit.log"
    with ExitStack() as stack:
        target = stack.enter_context(ignoring_target(signal.SIGUSR2))
        ns, syslogged = stack.enter_context(private_syslog()) if action == "syslog" \
            else (None, [])
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nmax_log_file = 1\n"
                      f"max_log_file_action = {action}\nnum_logs = 2\n{QUIET}"
                      f"{kill_line(target)}")
        with daemon(conf, mount_ns_of=ns) as d:
            sender = storm(target, STORM)
            marker = send(target, signal.SIGUSR2, 1)    # after the storm: the last event
            if action == "suspend":
                assert wait_for(lambda: d.said("writing suspended")), d.text()
                time.sleep(1.5)
            else:
                assert wait_for(lambda: events(log).kills.get((marker, 12)) == 1,
                                timeout=30), d.text()
            assert d.stop() == 0, d.text()
    files = every_log(log_dir)
    got = {p.name: events(p) for p in files}        # whole events, each one's records together
    written = sum(e.kills.get((sender, 12), 0) for e in got.values())
    lost = d.summary()
    for p in files:
        ausearch_reads(p)
    size = {p.name: p.stat().st_size for p in files}
    limit, event_max = 1 << 20, 4096

    def at_limit(name: str) -> bool:
        return limit <= size[name] < limit + event_max

    names = [p.name for p in files]
    if action in ("ignore", "syslog"):
        assert names == ["audit.log"] and size["audit.log"] > 2 * limit
        assert written == STORM and lost["log"] == 0
    if action == "syslog":
        warned = [m for m in syslogged if "at max_log_file" in m]
        assert len(warned) == 1 and "audtrace[" in warned[0], syslogged
    if action == "suspend":
        assert names == ["audit.log"] and at_limit("audit.log")
        assert 0 < written < STORM and written + lost["log"] == STORM + 1, (written, lost)
    if action == "rotate":                  # the oldest given up, not counted: auditd's way
        assert names == ["audit.log", "audit.log.1"] and at_limit("audit.log.1")
        assert 0 < written < STORM and lost["log"] == 0
    if action == "keep_logs":               # past num_logs, nothing given up
        assert names[:4] == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"][
            :len(names)] and len(names) >= 3
        assert all(at_limit(n) for n in names if n != "audit.log")
        assert written == STORM and lost["log"] == 0
    assert lost["ebpf"] == 0 and not d.said("Traceback")


@pytest.mark.skipif(not shutil.which("ausearch"), reason="needs ausearch (auditd)")
@pytest.mark.parametrize("name_format", ["user", "hostname", "none"])
def test_name_format_puts_node_first_and_ausearch_node_finds_it(tmp_path, name_format):
    """name_format as auditd writes it: `node=NAME type=...` on every line (USER: `name`,
    HOSTNAME: gethostname()); the real `ausearch --node NAME` finds each event, another
    name none. NONE: no node= anywhere."""
    node = {"user": "audtrace-test-node", "hostname": socket.gethostname(), "none": None}[
        name_format]
    log = tmp_path / "audit.log"
    name = "name = audtrace-test-node\n" if name_format == "user" else ""
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nname_format = "
                      f"{name_format}\n{name}{QUIET}{kill_line(target)}")
        with daemon(conf) as d:
            sender = send(target, signal.SIGUSR2, 4)
            assert wait_for(lambda: events(log).kills.get((sender, 12)) == 4), d.text()
            assert d.stop() == 0, d.text()
    lines = log.read_text().splitlines()
    assert len(lines) >= 12
    if node is None:
        assert not any("node=" in ln for ln in lines), lines[:3]
        return
    assert all(ln.startswith(f"node={node} type=") for ln in lines), lines[:3]

    def found(name: str) -> int:
        r = subprocess.run(["ausearch", "-if", str(log), "--node", name, "-p", str(sender),
                            "--raw"], capture_output=True, text=True, timeout=60)
        assert r.returncode in (0, 1) and "Malformed" not in r.stderr, r.stderr
        return sum(ln.startswith(f"node={node} type=SYSCALL") for ln in r.stdout.splitlines())

    assert found(node) == 4
    assert found("not-" + node) == 0


def log_fd(pid: int, log: Path) -> tuple[int, int]:
    """The daemon's descriptor of its log and its open flags, as the kernel reports them."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(log):
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                flags = next(ln for ln in info.splitlines() if ln.startswith("flags:"))
                return int(fd.name), int(flags.split()[1], 8)
        except FileNotFoundError:
            continue
    raise AssertionError(f"{log} is not open in {pid}")


@contextmanager
def fsyncs(pid: int) -> Iterator[list[int]]:
    """The real strace on every thread of pid: once the block ends, the list holds the fd
    of each fsync/fdatasync call made meanwhile."""
    import re

    out = Path(tempfile.mkdtemp(prefix="audtrace-strace-")) / "trace"
    proc = subprocess.Popen(["strace", "-f", "-e", "trace=fsync,fdatasync", "-o", str(out),
                             "-p", str(pid)], stderr=subprocess.PIPE, text=True)
    got: list[int] = []
    try:
        line = proc.stderr.readline()
        assert "attached" in line, line
        yield got
    finally:
        proc.send_signal(signal.SIGINT)         # detaches
        proc.wait(timeout=30)
        text = out.read_text() if out.exists() else ""
        shutil.rmtree(out.parent, ignore_errors=True)
    got += [int(m[1]) for m in re.finditer(r"\b(?:fsync|fdatasync)\((\d+)\)", text)]


O_DSYNC, O_SYNC = os.O_DSYNC, os.O_SYNC         # O_SYNC includes O_DSYNC's bit


@pytest.mark.skipif(not shutil.which("strace") or not shutil.which("ausearch"),
                    reason="needs strace and ausearch (scripts/setup.sh --test)")
@pytest.mark.parametrize("flush", ["none", "incremental", "incremental_async", "data", "sync"])
def test_flush_and_freq(tmp_path, flush):
    """flush as auditd.conf(5) gives it, seen from the kernel's side: DATA and SYNC open the
    log O_DSYNC and O_SYNC; INCREMENTAL and INCREMENTAL_ASYNC (on a thread of its own) call
    fsync on the log every `freq` (3) events, NONE, DATA and SYNC never (strace counts the
    calls). Every event is in the log, read by the real ausearch, while the daemon runs;
    a burst sent right before SIGTERM is all written at exit."""
    log = tmp_path / "audit.log"
    freq, n = 3, 6
    with ignoring_target(signal.SIGUSR2) as target:
        conf = config(tmp_path / "audtrace.conf", f"log_file = {log}\nflush = {flush}\n"
                      f"freq = {freq}\n{QUIET}{kill_line(target)}")
        with daemon(conf) as d:
            fd, flags = log_fd(d.proc.pid, log)
            senders = []
            with fsyncs(d.proc.pid) as calls:
                for _ in range(n):          # one event a write: one at a time
                    senders.append(send(target, signal.SIGUSR2, 1))
                    assert wait_for(lambda: events(log).kills.get((senders[-1], 12)) == 1), \
                        d.text()
                time.sleep(0.5)             # the asynchronous flush's last call
            assert all(ausearch_syscalls(log, s) == 1 for s in senders)
            burst = send(target, signal.SIGUSR2, 300)
            assert d.stop() == 0, d.text()
    assert flags & O_SYNC == {"data": O_DSYNC, "sync": O_SYNC}.get(flush, 0), oct(flags)
    on_log = [c for c in calls if c == fd]
    assert len(on_log) == (n // freq if flush.startswith("incremental") else 0), calls
    assert events(log).kills.get((burst, 12)) == 300
    assert d.summary() == {"ebpf": 0, "audit": 0, "log": 0}
