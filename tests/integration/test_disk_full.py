"""`-o` on a disk that fills up under a signal storm: the log holds whole events only, and
the disk-full action is carried out: ignore (go on, count, say it once there is room),
suspend (until SIGUSR2), stop (end cleanly, put everything back, exit 1).

The disk is a 1 MiB tmpfs in a mount namespace of the test's own, held by a sleeping
process: audtrace runs inside it (nsenter), the test reaches the files through
/proc/HOLDER/root, and the mount goes with the holder, whatever happens to the test.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from audtrace.compat.record import parse_line, split_fields
from helpers import (
    PYTHON,
    REPO,
    START_TIMEOUT,
    Tracer,
    bpf_prog_ids,
    bpf_prog_ids_held,
    follow_stderr,
    ignoring_target,
    leaked_bpf_progs,
    wait_for,
)

pytestmark = pytest.mark.kernel

DISK = 1 << 20
FILLER = 768 << 10          # leaves room for a few hundred kill events
STORM = 5000                # several megabytes of log: most cannot be written
AFTER = 300                 # sent once there is room again: all fit
PR_SET_PDEATHSIG = 1


@dataclass
class Disk:
    holder: subprocess.Popen
    inside: Path            # the mount point as audtrace (in the namespace) names it

    def path(self, name: str) -> Path:
        """A file of the disk as the test reaches it."""
        return Path(f"/proc/{self.holder.pid}/root{self.inside}") / name

    def tracing_mounts(self) -> list[str]:
        text = Path(f"/proc/{self.holder.pid}/mounts").read_text()
        return [m for m in text.splitlines() if m.split()[2] in ("tracefs", "debugfs")]


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs unshare and nsenter (util-linux)")
    inside = tmp_path / "disk"
    inside.mkdir()
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size={DISK},mode=0700 audtrace-test '{inside}' && echo ready"
         " && exec sleep 600"],
        stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    try:
        assert holder.stdout.readline() == "ready\n", "could not mount the test's tmpfs"
        yield Disk(holder, inside)
    finally:
        holder.kill()
        holder.wait()


def storm(target: int, n: int) -> int:
    """Send SIGUSR2 to target n times, back to back; the sender's pid."""
    r = subprocess.run([PYTHON, "-c", f"import os\nfor _ in range({n}): os.kill({target}, 12)\n"
                        "print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(r.stdout)


def start(disk: Disk, target: int, *extra: str) -> Tracer:
    """`audtrace kill` inside the disk's namespace, its log on the small disk."""
    log = disk.inside / "audit.log"
    cmd = ["nsenter", "-t", str(disk.holder.pid), "-m", "--", str(REPO / "audtrace"), "kill",
           "--sig", "USR2", "--target-pid", str(target), "-o", str(log), *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    tracer = Tracer(proc, disk.path("audit.log"))
    tracer._reader = follow_stderr(proc, tracer.stderr, START_TIMEOUT, "audtrace")
    return tracer


@dataclass
class Log:
    kills: dict[int, int]           # sender pid -> kill events written
    lost: dict[str, list[int]]      # source -> lost= of each DAEMON_ERR
    order: list[str]                # "kill" or "lost:SOURCE", in file order


def read_log(path: Path) -> Log:
    """Every line parsed as an audit record (a partial line fails here)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"the log ends inside a line: {data[-80:]!r}"
    out = Log({}, {}, [])
    for line in data.decode().splitlines():
        _node, rtype, _sec, _msec, _serial, body = parse_line(line)
        fields = dict(split_fields(body))
        if rtype == "SYSCALL":
            pid = int(fields["pid"])
            out.kills[pid] = out.kills.get(pid, 0) + 1
            out.order.append("kill")
        elif rtype == "DAEMON_ERR":
            source = fields["source"].strip('"')
            out.lost.setdefault(source, []).append(int(fields["lost"].strip('"')))
            out.order.append(f"lost:{source}")
    return out


def ausearch_reads(path: Path) -> None:
    if not shutil.which("ausearch"):
        return
    r = subprocess.run(["ausearch", "-if", str(path), "--debug", "-m", "SYSCALL,DAEMON_ERR",
                        "--raw"], capture_output=True, text=True)
    assert r.returncode == 0 and "Malformed" not in r.stderr, r.stderr[-2000:]


def summary(tracer: Tracer) -> dict[str, int]:
    line = next(s for s in tracer.stderr if "events (" in s)
    m = re.search(r"lost: ebpf (\d+), audit (\d+), log (\d+)", line)
    assert m, line
    return {"ebpf": int(m[1]), "audit": int(m[2]), "log": int(m[3])}


def fill(disk: Disk) -> Path:
    filler = disk.path("filler")
    filler.write_bytes(b"\0" * FILLER)
    return filler


def no_traceback(tracer: Tracer) -> None:
    assert not any("Traceback" in s for s in tracer.stderr), "\n".join(tracer.stderr)


def test_keep_tracing_count_the_loss_and_say_it_when_room_comes_back(tmp_path):
    with small_disk(tmp_path) as disk, ignoring_target(signal.SIGUSR2) as target:
        filler = fill(disk)
        tracer = start(disk, target)
        try:
            storm(target, STORM)
            assert wait_for(lambda: any("No space left" in s for s in tracer.stderr)), \
                "\n".join(tracer.stderr)
            wait_for(lambda: False, timeout=1.5)            # the stream's wait, drained
            read_log(tracer.output)                         # full: yet every line whole
            assert tracer.output.stat().st_size > DISK - FILLER - (64 << 10)

            filler.unlink()
            # (the loss record, small, may have found room before the filler went)
            assert wait_for(lambda: "lost:log" in read_log(tracer.output).order), \
                "no DAEMON_ERR for the log once there was room"
            sender = storm(target, AFTER)
            assert wait_for(lambda: read_log(tracer.output).kills.get(sender) == AFTER)
            assert tracer.stop() == 0
        finally:
            tracer.stop()
        log = read_log(tracer.output)
        ausearch_reads(tracer.output)
    no_traceback(tracer)
    assert sum("No space left" in s for s in tracer.stderr) == 1
    assert any(s.endswith("writing again") for s in tracer.stderr)
    lost = summary(tracer)
    assert lost["log"] > STORM // 2 and sum(log.lost["log"]) == lost["log"]
    assert sum(log.lost.get("ebpf", [])) == lost["ebpf"]
    assert sum(log.kills.values()) + lost["log"] + lost["ebpf"] == STORM + AFTER
    # tracing went on: the storm after the loss record is all there, after it
    first_loss = log.order.index("lost:log")
    assert log.order[first_loss + 1:].count("kill") >= AFTER


def test_suspend_writes_nothing_until_sigusr2(tmp_path):
    with small_disk(tmp_path) as disk, ignoring_target(signal.SIGUSR2) as target:
        filler = fill(disk)
        tracer = start(disk, target, "--disk-full-action", "suspend")
        try:
            storm(target, STORM)
            assert wait_for(lambda: any("suspended" in s for s in tracer.stderr))
            filler.unlink()
            unwritten = storm(target, AFTER)            # room, but suspended: lost
            wait_for(lambda: False, timeout=1.5)
            assert read_log(tracer.output).kills.get(unwritten) is None
            tracer.proc.send_signal(signal.SIGUSR2)     # as `auditd resume`
            assert wait_for(lambda: any("writing resumed" in s for s in tracer.stderr))
            sender = storm(target, AFTER)
            assert wait_for(lambda: read_log(tracer.output).kills.get(sender) == AFTER)
            assert tracer.stop() == 0
        finally:
            tracer.stop()
        log = read_log(tracer.output)
        ausearch_reads(tracer.output)
    no_traceback(tracer)
    lost = summary(tracer)
    assert unwritten not in log.kills
    assert sum(log.lost["log"]) == lost["log"] >= AFTER
    assert sum(log.kills.values()) + lost["log"] + lost["ebpf"] == STORM + 2 * AFTER


def test_stop_ends_the_run_cleanly_and_puts_everything_back(tmp_path):
    with small_disk(tmp_path) as disk, ignoring_target(signal.SIGUSR2) as target:
        fill(disk)
        mounts, progs = disk.tracing_mounts(), bpf_prog_ids()
        tracer = start(disk, target, "--disk-full-action", "stop")
        held = bpf_prog_ids_held(tracer.proc.pid)
        assert held, "audtrace holds no BPF program while tracing"
        try:
            storm(target, STORM)
            rc = tracer.proc.wait(timeout=30)
            tracer._reader.join(timeout=5)
        finally:
            tracer.stop()
        after_mounts = disk.tracing_mounts()
        log = read_log(tracer.output)
        ausearch_reads(tracer.output)
    no_traceback(tracer)
    assert rc == 1, "\n".join(tracer.stderr)
    last = tracer.stderr[-1]
    assert last.startswith("audtrace: ") and "No space left on device" in last \
        and "tracing stopped (disk-full action stop)" in last, "\n".join(tracer.stderr)
    assert sum("tracing stopped" in s for s in tracer.stderr) == 1
    assert summary(tracer)["log"] > 0 and sum(log.kills.values()) > 0
    assert after_mounts == mounts, "tracefs/debugfs mounts changed"
    assert not held & bpf_prog_ids(), "audtrace's BPF programs still loaded"
    assert not leaked_bpf_progs(progs), "BPF programs loaded that nobody holds"


def test_rotation_by_size_between_events(tracers, tmp_path):
    """--max-log-file 1 --num-logs 3 under a storm of several MiB: log.2, log.1, log, each
    of whole events, the rotated ones ending with the event that reached 1 MiB, in order."""
    log = tmp_path / "audit.log"
    with ignoring_target(signal.SIGUSR2) as target:
        tracer = tracers(["kill", "--sig", "USR2", "--target-pid", str(target),
                          "--max-log-file", "1", "--num-logs", "3"], log)
        storm(target, 2 * STORM)
        assert wait_for(lambda: (tmp_path / "audit.log.2").exists())
        assert tracer.stop() == 0
    no_traceback(tracer)
    files = [tmp_path / "audit.log.2", tmp_path / "audit.log.1", log]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)
    stamps = []
    for p in files:
        read_log(p)
        ausearch_reads(p)
        stamps.append([parse_line(line)[2:5] for line in p.read_text().splitlines()])
    for p in files[:2]:
        assert 1 << 20 <= p.stat().st_size < (1 << 20) + 4096, p
    flat = [s for part in stamps for s in part]
    assert flat == sorted(flat), "the rotated logs are not oldest first"
