"""Central collection on auditd's own engine: audisp-remote, run as audtrace's plugin by
tracer/plugins.py (as the daemon runs it), ships the project's events to a real auditd
listening on TCP, which writes them to its log, where ausearch reads them.

Isolated from the system: everything runs in new mount and network namespaces (`unshare -m
-n`). The receiving auditd has its own configuration directory and log, `local_events = no`
(it never opens kernel audit: the kernel's audit pid and flag stay as they are, and other
tests' audit is not disturbed), `tcp_listen_port` on the namespace's own loopback (no port
of the machine's in use). audisp-remote reads only /etc/audit/audisp-remote.conf: the
test's file is bind-mounted over it in the namespace; /run (auditd's pid file) and /dev
(its syslog socket, served by the feeder) are tmpfs there. The system's files, the
machine's own auditd if any, and kernel audit are left as they were, which the test checks.

The second test runs `audtrace daemon` (tracer/daemon/, skipped where it is absent) with
audisp-remote in its plugin_dir: the kill events it traces arrive in the central log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from audtrace.compat.record import parse_log
from helpers import audit_enabled

HERE = Path(__file__).parent
GOLDEN_RAW = HERE.parent / "data/golden/raw.out"    # the project's own events
AUDISP_REMOTE = "/sbin/audisp-remote"
REMOTE_CONF = Path("/etc/audit/audisp-remote.conf")
PORT = 60               # audisp-remote's default; in the test's own network namespace
AUDITD_OWN = ("DAEMON_START", "DAEMON_ACCEPT", "DAEMON_CLOSE", "DAEMON_END")

pytestmark = [
    pytest.mark.skipif(not Path(AUDISP_REMOTE).exists() or not REMOTE_CONF.exists(),
                       reason="needs audisp-remote (Debian package audispd-plugins)"),
    pytest.mark.skipif(shutil.which("auditd") is None or shutil.which("ausearch") is None,
                       reason="needs auditd and ausearch (Debian package auditd)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None
                       or shutil.which("ip") is None,
                       reason="needs root, unshare and ip for private namespaces"),
]

AUDITD_CONF = """\
local_events = no
write_logs = yes
log_file = {log}
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 20
max_log_file = 0
max_log_file_action = IGNORE
num_logs = 1
name_format = NONE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
q_depth = 2000
overflow_action = SYSLOG
plugin_dir = {plugins}
tcp_listen_port = {port}
tcp_listen_queue = 5
tcp_max_per_addr = 1
tcp_client_max_idle = 0
use_libwrap = no
"""

REMOTE = """\
remote_server = 127.0.0.1
port = {port}
transport = tcp
mode = immediate
queue_file = {queue}
queue_depth = 10240
format = managed
network_retry_time = 1
max_tries_per_record = 3
max_time_per_record = 5
heartbeat_timeout = 0
network_failure_action = syslog
remote_ending_action = reconnect
"""

# in the namespaces: loopback up, private /run and /dev, the test's audisp-remote.conf
SCRIPT = """set -e
ip link set lo up
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/urandom c 1 9
mount --bind "$1" /etc/audit/audisp-remote.conf
shift
exec "$@"
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kernel_audit_pid() -> str:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    return next(ln.split()[1] for ln in out.splitlines() if ln.startswith("pid "))


def run_in_group(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run cmd in a process group of its own; on a timeout the whole group is killed, so
    the receiving auditd never outlives the test (audisp-remote ends at its stdin's EOF)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def ausearch(log: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ausearch", "-if", str(log), *args], capture_output=True,
                          text=True, errors="surrogateescape", timeout=60)


def central_setup(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """The files of a central auditd (config dir, its log) and of an audisp-remote plugin
    sending to it (its config, a plugin_dir holding it): (conf, central log, remote, plugins)."""
    conf = tmp_path / "central"
    (conf / "plugins.d").mkdir(parents=True)
    central_log = tmp_path / "central.log"
    (conf / "auditd.conf").write_text(AUDITD_CONF.format(
        log=central_log, plugins=conf / "plugins.d", port=PORT))
    (conf / "auditd.conf").chmod(0o600)
    remote = tmp_path / "audisp-remote.conf"
    remote.write_text(REMOTE.format(port=PORT, queue=tmp_path / "remote.queue"))
    remote.chmod(0o640)
    plugins = tmp_path / "plugins.d"
    plugins.mkdir()
    (plugins / "au-remote.conf").write_text(
        f"active = yes\ndirection = out\npath = {AUDISP_REMOTE}\ntype = always\n"
        "format = string\n")
    (plugins / "au-remote.conf").chmod(0o640)
    return conf, central_log, remote, plugins


def test_audisp_remote_ships_every_event_to_a_central_auditd(tmp_path):
    """audisp-remote, fed by the plugin dispatcher, delivers every record of the project's
    events to the central auditd's log, in order, node= kept; ausearch reads them there
    (by node, by type, interpreted). auditd keeps EOE out of its log, as it does for its
    own events. Nothing of the system is changed."""
    conf, log, remote, plugins = central_setup(tmp_path)
    before = (sha(REMOTE_CONF), kernel_audit_pid(), audit_enabled())

    r = run_in_group(
        ["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", SCRIPT, "sh",
         str(remote), sys.executable, str(HERE / "plugin_feed.py"), str(plugins),
         str(GOLDEN_RAW), "--syslog", "/dev/log", "--auditd", str(conf), "--port", str(PORT),
         "--central-log", str(log)], timeout=120)

    assert (sha(REMOTE_CONF), kernel_audit_pid(), audit_enabled()) == before
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["lost"] == 0 and got["backlog"] == 0 and got["notices"] == [], got
    assert got["auditd"]["rc"] == 0, got
    shipped = GOLDEN_RAW.read_text().splitlines()
    lines = log.read_text().splitlines()
    own = [ln for ln in lines if ln.split(" msg=")[0].removeprefix("type=") in AUDITD_OWN]
    assert [ln.split()[0] for ln in own] == [f"type={t}" for t in AUDITD_OWN], (
        own, got["syslog"])
    assert [ln for ln in lines if ln not in own] == shipped, got["syslog"]

    # ausearch reads the central log: every record (an event is output once ausearch
    # holds it complete: without EOE in the log, not always in the log's order), every
    # event grouped as the sender's
    events = parse_log(shipped)
    r = ausearch(log, "--raw")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(lines)
    r = ausearch(log, "-i")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n----\n") + r.stdout.startswith("----\n") == len(events) + 4
    r = ausearch(log, "--node", "web-01", "--raw")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [ln for ln in shipped if ln.startswith("node=web-01 ")]
    r = ausearch(log, "-m", "OBJ_PID", "--raw")
    assert r.returncode == 0, r.stderr
    obj_pids = sum(rec.type == "OBJ_PID" for e in events for rec in e.records)
    assert r.stdout.count("type=OBJ_PID ") == obj_pids > 0


# ---- fed by the daemon ----------------------------------------------------------------------

def in_netns(holder: int, *cmd: str, setup: str) -> list[str]:
    """cmd in the holder's network namespace and a mount namespace of its own, after the
    shell commands `setup` there."""
    return ["nsenter", "-t", str(holder), "-n", "--", "unshare", "-m", "--propagation",
            "private", "sh", "-c", f"set -e\n{setup}\nexec \"$@\"", "sh", *cmd]


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.mark.kernel
def test_the_daemon_ships_its_events_through_audisp_remote(tmp_path):
    """`audtrace daemon` with audisp-remote in its plugin_dir: the kill events it traces
    reach a central auditd's log, every record as the daemon's own log has it (node= of
    `name_format = user`), ausearch finding them by node. The central auditd and the daemon
    share a network namespace of the test's (its own loopback); the daemon's mount
    namespace has the test's audisp-remote.conf, auditd's a private /run for its pid file.
    Kernel audit, the system's files and its auditd are left alone."""
    pytest.importorskip("audtrace.tracer.daemon", reason="needs `audtrace daemon`")
    from helpers import REPO, ignoring_target, wait_for
    from test_daemon import kill_line, send

    conf, central_log, remote, plugins = central_setup(tmp_path)
    log = tmp_path / "audit.log"
    before = (sha(REMOTE_CONF), kernel_audit_pid(), audit_enabled())

    holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 600"])
    procs: list[subprocess.Popen] = []
    stderr: list[str] = []
    try:
        assert wait_for(lambda: Path(f"/proc/{holder.pid}/comm").read_text() == "sleep\n")
        auditd = subprocess.Popen(
            in_netns(holder.pid, "auditd", "-n", "-s", "nochange", "-c", str(conf),
                     setup="mount -t tmpfs -o mode=755 tmpfs /run"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(auditd)
        assert wait_for(lambda: central_log.exists()
                        and b"type=DAEMON_START " in central_log.read_bytes()), "auditd"
        with ignoring_target(signal.SIGUSR2) as target:
            (tmp_path / "audtrace.conf").write_text(
                f"log_file = {log}\nplugin_dir = {plugins}\nname_format = user\n"
                f"name = web-01\nspace_left = 0\nadmin_space_left = 0\n{kill_line(target)}")
            daemon = subprocess.Popen(
                in_netns(holder.pid, str(REPO / "audtrace"), "daemon", "--config",
                         str(tmp_path / "audtrace.conf"),
                         setup=f"mount --bind {remote} {REMOTE_CONF}"),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
            procs.append(daemon)
            for line in daemon.stderr:
                stderr.append(line.rstrip("\n"))
                if line.startswith("audtrace: tracing "):
                    break
            assert daemon.poll() is None, "\n".join(stderr)
            sender = send(target, signal.SIGUSR2, 20)
            assert wait_for(lambda: log.exists() and log.read_text().count(
                f" pid={sender} ") == 20), "\n".join(stderr)
            assert stop(daemon) == 0, "\n".join(stderr)
            stderr += daemon.stderr.read().splitlines()
        assert wait_for(lambda: b"type=DAEMON_CLOSE " in central_log.read_bytes(), 20)
        assert stop(auditd) == 0
    finally:
        for p in procs:
            stop(p)
        holder.kill()
        holder.wait()
    assert (sha(REMOTE_CONF), kernel_audit_pid(), audit_enabled()) == before
    assert "plugins 0" in next(s for s in stderr if "events (" in s), stderr
    ours = log.read_text().splitlines()
    assert sum(f" pid={sender} " in ln for ln in ours) == 20
    assert all(ln.startswith("node=web-01 type=") for ln in ours)
    lines = central_log.read_text().splitlines()
    arrived = [ln for ln in lines
               if ln.split(" msg=")[0].removeprefix("type=") not in AUDITD_OWN]
    assert arrived == ours
    def stamp(line: str) -> str:
        return line.split(" msg=audit(", 1)[1].split(")", 1)[0]

    sent = {stamp(ln) for ln in ours if f" pid={sender} " in ln}
    r = ausearch(central_log, "--node", "web-01", "-p", str(sender), "--raw")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(ln for ln in ours if stamp(ln) in sent)
