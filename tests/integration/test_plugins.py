"""auditd's plugins run by tracer/plugins.py: real processes, fed real pipes.

Small plugin programs written by each test (one appending its stdin to a file, one dying
after N lines, one never reading) show the dispatcher's rules: what a plugin gets and how
it is started, restarts up to max_restarts with every missed event counted, a stalled
plugin never holding the tracer, the end (EOF, SIGTERM, SIGKILL). Then real plugins:
laurel writing the project's events as JSON while it runs, and Debian's audisp-syslog
writing each record to a syslog socket (in a mount namespace of its own, where /dev/log is
the test's). The central collection through audisp-remote is test_central_collection.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audtrace.compat.record import parse_log
from audtrace.tracer import plugins as plugins_mod
from audtrace.tracer.plugins import PluginError, Plugins, split_events
from helpers import wait_for

HERE = Path(__file__).parent
GOLDEN_RAW = HERE.parent / "data/golden/raw.out"    # the project's own events, built
PY = "/usr/bin/python3"

# appends its stdin to OUT; notes in OUT.info how it was started and what it was sent
RECORD = f"""#!{PY}
import json, os, signal, sys
out = sys.argv[1]
def note(what):
    with open(out + ".info", "a") as f:
        f.write(what + "\\n")
def fd_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
signal.signal(signal.SIGHUP, lambda *_: note("SIGHUP"))
note(json.dumps({{"argv": sys.argv, "environ": open("/proc/self/environ").read(),
                 "stdout": os.readlink("/proc/self/fd/1"), "stdin": os.readlink("/proc/self/fd/0"),
                 "sid": os.getsid(0), "pid": os.getpid(),
                 "fds": [fd for fd in range(3, 1024) if fd_open(fd)]}}))
with open(out, "ab", buffering=0) as f:
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        f.write(b)
note("EOF")
"""

# reads byte by byte (nothing read ahead and lost unseen), appends each line; after N lines
# it exits 3 (with a third argument `hang`: stops reading, and waits to be killed). Each run
# starts with a START line.
DIE_AFTER = f"""#!{PY}
import os, sys, time
out, n = sys.argv[1], int(sys.argv[2])
with open(out, "ab", buffering=0) as f:
    f.write(b"START\\n")
    line = b""
    while n:
        b = os.read(0, 1)
        if not b:
            sys.exit(0)
        line += b
        if b == b"\\n":
            f.write(line)
            line = b""
            n -= 1
while sys.argv[3:] == ["hang"]:
    time.sleep(60)
sys.exit(3)
"""

# never reads its stdin; with "stubborn", ignores SIGTERM too (noting it)
STALL = f"""#!{PY}
import os, signal, sys, time
out = sys.argv[1]
def note(what):
    with open(out, "a") as f:
        f.write(what + "\\n")
if len(sys.argv) > 2:
    signal.signal(signal.SIGTERM, lambda *_: note("SIGTERM"))
note(str(os.getpid()))
while True:
    time.sleep(60)
"""


def plugin(d: Path, name: str, code: str, *args: str) -> Path:
    """A program and its plugin file `NAME.conf` in d; returns the program."""
    (d / "plugins.d").mkdir(exist_ok=True)
    prog = d / name
    prog.write_text(code)
    prog.chmod(0o755)
    args_line = f"args = {' '.join(args)}\n" if args else ""   # auditd refuses `args =`
    (d / "plugins.d" / f"{name}.conf").write_text(
        f"active = yes\ndirection = out\npath = {prog}\ntype = always\n"
        f"{args_line}format = string\n")
    return prog


def user_events(first: int, count: int) -> bytes:
    """`count` single-record events, one line each (a single user record gets no EOE)."""
    return b"".join(b"type=USER msg=audit(1795318756.%03d:%d): pid=1 uid=0 auid=0 ses=1 "
                    b"msg='op=test n=%d res=success' src=ebpf\n" % (i % 1000, i, i)
                    for i in range(first, first + count))


def syscall_events(first: int, count: int) -> bytes:
    """SYSCALL + PROCTITLE events: three lines each with the EOE plugins get."""
    return b"".join(
        b"type=SYSCALL msg=audit(1795318757.%03d:%d): arch=c000003e syscall=62 success=yes "
        b"exit=0 a0=1 a1=f a2=0 a3=0 items=0 ppid=1 pid=2 auid=0 uid=0 gid=0 euid=0 suid=0 "
        b"fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm=\"kill\" exe=\"/usr/bin/kill\" "
        b"key=(null) src=ebpf\ntype=PROCTITLE msg=audit(1795318757.%03d:%d): proctitle=6B696C6C "
        b"src=ebpf\n" % (i % 1000, i, i % 1000, i) for i in range(first, first + count))


def settle(p: Plugins, until, timeout: float = 15.0) -> bool:
    """Poll as the daemon's loop does until `until()` holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        p.poll()
        if until():
            return True
        time.sleep(0.01)
    return until()


@contextlib.contextmanager
def alarm(seconds: int):
    """Fail, instead of hanging, should a call block."""
    def fire(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


# ---- the dispatcher's rules ----------------------------------------------------------------

def test_plugins_get_every_event_as_auditd_hands_it(tmp_path):
    """Two plugins get the project's events (the golden corpus), fed in batches of varied
    sizes, byte for byte as split_events makes them: the RAW lines plus EOE. Each runs as
    auditd runs its plugins: argv from `args`, empty environment, stdin a pipe, stdout
    /dev/null, no other descriptor, a session of its own; SIGHUP on reload; ends at EOF."""
    a = plugin(tmp_path, "a", RECORD, str(tmp_path / "a.out"), "second-arg")
    plugin(tmp_path, "b", RECORD, str(tmp_path / "b.out"))
    events = split_events(GOLDEN_RAW.read_bytes())
    raw = [b"".join(ln for ln in ev.splitlines(keepends=True) if b"type=EOE " not in ln)
           for ev in events]                                # each event as the log has it
    notices: list[str] = []
    with Plugins.from_dir(str(tmp_path / "plugins.d"), 10, notices.append) as p:
        assert p.names() == ["a.conf", "b.conf"]
        p.start()
        at, size = 0, 1
        while at < len(raw):
            p.feed(b"".join(raw[at:at + size]))
            p.poll()
            at, size = at + size, size % 7 + 1
        assert settle(p, lambda: p.backlog() == 0)
        p.reload()
        assert wait_for(lambda: "SIGHUP" in (tmp_path / "a.out.info").read_text())
    assert p.lost() == 0 and notices == []
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.out").read_bytes() == b"".join(events)
        info = (tmp_path / f"{name}.out.info").read_text().splitlines()
        assert info[-1] == "EOF", "ended at EOF, not by a signal"
        started = json.loads(info[0])
        assert started["environ"] == ""
        assert started["stdout"] == "/dev/null"
        assert started["stdin"].startswith("pipe:")
        assert started["fds"] == []
        assert started["sid"] == started["pid"]
        assert gone(started["pid"])
    assert json.loads((tmp_path / "a.out.info").read_text().splitlines()[0])["argv"] == [
        str(a), str(tmp_path / "a.out"), "second-arg"]


def test_restarts_up_to_max_restarts_counting_what_each_run_missed(tmp_path):
    """A plugin that exits after 10 lines, fed 15 events at a time: each run reads 10, the 5
    left in its pipe are counted; it is restarted twice (max_restarts 2), then no more, and
    every event after that is its miss too. Read + lost = fed, exactly."""
    out = tmp_path / "out"
    plugin(tmp_path, "dies", DIE_AFTER, str(out), "10")
    notices: list[str] = []
    with Plugins.from_dir(str(tmp_path / "plugins.d"), 2, notices.append) as p:
        p.start()
        for r in range(3):
            p.feed(user_events(15 * r, 15))
            assert settle(p, lambda r=r: len(notices) == r + 1), notices
            assert p.lost() == 5 * (r + 1)
        p.feed(user_events(45, 15))
        assert p.lost() == 30
    assert notices[0].startswith(f"plugin dies.conf ({tmp_path / 'dies'}) exited with status "
                                 "3, 5 events it had not read lost; restarted (1 of "
                                 "max_restarts 2)"), notices
    assert "restarted (2 of max_restarts 2)" in notices[1]
    assert notices[2].endswith("not restarted: max_restarts (2) reached, the events it misses "
                               "are counted lost")
    assert len(notices) == 3 and p.lost() == 30
    got = [ln for ln in out.read_bytes().splitlines(keepends=True) if ln != b"START\n"]
    assert got == [ln for r in range(3) for ln in
                   user_events(15 * r, 10).splitlines(keepends=True)]
    assert out.read_bytes().count(b"START\n") == 3


def test_a_killed_plugin_is_restarted_and_its_misses_counted(tmp_path):
    """A plugin killed (SIGKILL) with 5 events unread in its pipe: poll() restarts it and
    counts the 5 as its misses; the new run gets what is fed after, from its first line."""
    out = tmp_path / "out"
    plugin(tmp_path, "victim", DIE_AFTER, str(out), "10", "hang")
    notices: list[str] = []

    def lines() -> list[bytes]:
        return out.read_bytes().splitlines(keepends=True) if out.exists() else []

    with Plugins.from_dir(str(tmp_path / "plugins.d"), 3, notices.append) as p:
        p.start()
        p.feed(user_events(0, 15))
        assert settle(p, lambda: len(lines()) == 11)          # START and 10 events
        pid = p._plugins[0].proc.pid
        os.kill(pid, signal.SIGKILL)
        assert settle(p, lambda: len(notices) == 1)
        assert p.lost() == 5
        p.feed(user_events(15, 4))
        assert settle(p, lambda: len(lines()) == 16)          # START and the 4 new events
    assert notices == [f"plugin victim.conf ({tmp_path / 'victim'}) was killed by SIGKILL, 5 "
                       "events it had not read lost; restarted (1 of max_restarts 3)"]
    assert lines() == [b"START\n", *user_events(0, 10).splitlines(keepends=True),
                       b"START\n", *user_events(15, 4).splitlines(keepends=True)]
    assert p.lost() == 5, "the second run, ended at EOF, had read everything"


def test_reload_applies_the_directorys_changes(tmp_path, monkeypatch):
    """reload(dir): an unchanged plugin gets SIGHUP and stays (same process); one whose
    file is gone is ended, its unread events counted; a new one starts and gets what is
    fed after. reload() alone: SIGHUP only. A broken file: PluginError, nothing changed."""
    monkeypatch.setattr(plugins_mod, "CLOSE_EOF_S", 0.3)
    plugin(tmp_path, "stays", RECORD, str(tmp_path / "stays.out"))
    plugin(tmp_path, "goes", STALL, str(tmp_path / "goes.out"))
    d = tmp_path / "plugins.d"
    notices: list[str] = []
    with Plugins.from_dir(str(d), 10, notices.append) as p:
        p.start()
        p.feed(user_events(0, 3))
        assert settle(p, lambda: (tmp_path / "goes.out").exists()
                      and (tmp_path / "stays.out").exists()
                      and len((tmp_path / "stays.out").read_bytes().splitlines()) == 3)
        stays_pid = p._plugins[1].proc.pid
        goes_pid = int((tmp_path / "goes.out").read_text().split()[0])
        (d / "goes.conf").unlink()
        plugin(tmp_path, "new", RECORD, str(tmp_path / "new.out"))
        (d / "broken.conf").write_text("active = perhaps\n")
        with pytest.raises(PluginError, match="broken.conf:1: active"):
            p.reload(str(d))
        assert p.names() == ["goes.conf", "stays.conf"] and not gone(goes_pid)
        (d / "broken.conf").unlink()
        p.reload(str(d))
        assert p.names() == ["new.conf", "stays.conf"]
        assert gone(goes_pid) and p.lost() == 3, "the 3 events `goes` never read"
        assert p._plugins[1].proc.pid == stays_pid
        p.feed(user_events(3, 2))
        assert settle(p, lambda: p.backlog() == 0)
        p.reload()
    assert notices == [f"plugin goes.conf ({tmp_path / 'goes'}): 3 events it had not read "
                       "lost at reload"]
    assert (tmp_path / "stays.out").read_bytes() == user_events(0, 5)
    assert (tmp_path / "new.out").read_bytes() == user_events(3, 2)
    hups = (tmp_path / "stays.out.info").read_text().splitlines().count("SIGHUP")
    assert hups == 2
    assert (tmp_path / "new.out.info").read_text().splitlines().count("SIGHUP") == 1


def test_a_restarted_plugin_gets_whole_events_and_nothing_twice(tmp_path, monkeypatch):
    """A burst larger than the pipe (4 KiB here) to a plugin that dies in the middle of its
    third event: each run's first line is the first line of an event (what was written in
    part to the dead one goes whole to the next), no event reaches two runs, and events
    read to their end + events counted lost = events fed."""
    monkeypatch.setattr(plugins_mod, "PIPE_SIZE", 4096)
    out = tmp_path / "out"
    plugin(tmp_path, "dies", DIE_AFTER, str(out), "7")
    fed = 300
    with Plugins.from_dir(str(tmp_path / "plugins.d"), 1000, lambda _m: None) as p:
        p.start()
        p.feed(syscall_events(0, fed))
        assert p.lost() == 0, "the queue (q_depth 2000) holds what the pipe does not"
        assert settle(p, lambda: p.backlog() == 0, 60)
    runs = out.read_bytes().split(b"START\n")[1:]
    assert len(runs) > 2
    whole: list[bytes] = []
    for run in runs:
        lines = run.splitlines(keepends=True)
        assert not lines or lines[0].startswith(b"type=SYSCALL "), lines[:1]
        for i in range(0, len(lines) - 2, 3):
            if lines[i + 2].startswith(b"type=EOE "):
                whole.append(b"".join(lines[i:i + 3]))
    assert len(set(whole)) == len(whole), "an event reached two runs"
    assert len(whole) + p.lost() == fed
    assert p.lost() > 0


def test_a_stalled_plugin_never_blocks_and_its_misses_are_counted(tmp_path, monkeypatch):
    """A plugin that never reads beside one that does: feeding 3 MB never waits (the pipe
    is non-blocking; 100 events queue, q_depth, then each new one is the stalled plugin's
    miss); the reading plugin, given time to read each batch, gets everything; at the end,
    EOF, then SIGTERM, and every event the stalled one never read is counted: lost = fed."""
    monkeypatch.setattr(plugins_mod, "CLOSE_EOF_S", 0.3)
    plugin(tmp_path, "reads", RECORD, str(tmp_path / "reads.out"))
    plugin(tmp_path, "stalls", STALL, str(tmp_path / "stalls.out"))
    notices: list[str] = []
    batches = [user_events(i * 100, 100) for i in range(200)]
    fed = 100 * len(batches)
    reads = tmp_path / "reads.out"
    with Plugins.from_dir(str(tmp_path / "plugins.d"), 10, notices.append, q_depth=100) as p:
        p.start()
        given = 0
        for batch in batches:
            with alarm(5):
                p.feed(batch)
                p.poll()
            given += len(batch)
            assert settle(p, lambda g=given: reads.exists() and reads.stat().st_size == g, 30)
        missed = p.lost()
        assert 0 < missed < fed
        stalled_pid = int((tmp_path / "stalls.out").read_text().split()[0])
    assert p.lost() == fed
    assert (tmp_path / "reads.out").read_bytes() == b"".join(batches)
    assert gone(stalled_pid)
    assert notices == [f"plugin stalls.conf ({tmp_path / 'stalls'}): {fed - missed} events "
                       "it had not read lost at the end"]


def test_close_escalates_to_sigkill(tmp_path, monkeypatch):
    """A plugin deaf to EOF and SIGTERM is killed: close() returns, nothing is left."""
    monkeypatch.setattr(plugins_mod, "CLOSE_EOF_S", 0.2)
    monkeypatch.setattr(plugins_mod, "CLOSE_TERM_S", 0.5)
    plugin(tmp_path, "deaf", STALL, str(tmp_path / "deaf.out"), "stubborn")
    with Plugins.from_dir(str(tmp_path / "plugins.d"), 10, lambda _m: None) as p:
        p.start()
        assert wait_for(lambda: (tmp_path / "deaf.out").exists())
        pid = int((tmp_path / "deaf.out").read_text().split()[0])
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5
    assert gone(pid)
    assert (tmp_path / "deaf.out").read_text().split()[1:] == ["SIGTERM"]


def test_a_plugin_that_cannot_run_is_one_line(tmp_path):
    prog = plugin(tmp_path, "notexec", "no interpreter line: not a program\n")
    plugin(tmp_path, "ok", RECORD, str(tmp_path / "ok.out"))   # sorted after: never started
    p = Plugins.from_dir(str(tmp_path / "plugins.d"), 10, lambda _m: None)
    with pytest.raises(PluginError) as e:
        p.start()
    p.close()
    assert str(e.value) == (f"{tmp_path / 'plugins.d' / 'notexec.conf'}: path: cannot run "
                            f"{prog}: Exec format error")


def test_no_plugins_costs_nothing(tmp_path):
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "off.conf").write_text("active = no\npath = /x/y\n")
    with Plugins.from_dir(str(tmp_path / "plugins.d"), 10, lambda _m: None) as p:
        p.start()
        p.feed(user_events(0, 5))
        p.poll()
        assert len(p) == 0 and p.lost() == 0 and p.backlog() == 0


# ---- real plugins ---------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("laurel") is None, reason="needs laurel (Debian package laurel)")
def test_laurel_as_a_plugin_writes_every_event_while_running(tmp_path):
    """laurel, run by the dispatcher as auditd runs it, writes the project's events as JSON
    as they come (not only at its end: the EOE after each syscall event tells it an event
    is complete), each once, with its id and node."""
    d = tmp_path / "laurel"
    d.mkdir()
    (d / "laurel.toml").write_text(f'directory = "{d}"\nstatusreport-period = 0\n'
                                   '[auditlog]\nfile = "events.jsonl"\n')
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "laurel.conf").write_text(
        f"active = yes\ndirection = out\ntype = always\nformat = string\n"
        f"path = {shutil.which('laurel')}\nargs = --config {d / 'laurel.toml'}\n")
    want = parse_log(GOLDEN_RAW.read_text().splitlines())
    jsonl = d / "events.jsonl"

    def written() -> list[dict]:
        text = jsonl.read_text() if jsonl.exists() else ""
        return [json.loads(ln) for ln in text.splitlines() if ln.endswith("}")]

    with Plugins.from_dir(str(tmp_path / "plugins.d"), 10, lambda _m: None) as p:
        p.start()
        p.feed(GOLDEN_RAW.read_bytes())
        assert settle(p, lambda: len(written()) == len(want), 30), len(written())
    got = written()
    assert p.lost() == 0
    assert sorted(e["ID"] for e in got) == sorted(
        f"{e.sec}.{e.msec:03d}:{e.serial}" for e in want)
    assert {(e["ID"], e.get("NODE")) for e in got} == {
        (f"{e.sec}.{e.msec:03d}:{e.serial}", e.node) for e in want}


AUDISP_SYSLOG = "/sbin/audisp-syslog"


@pytest.mark.skipif(not Path(AUDISP_SYSLOG).exists(), reason="needs audisp-syslog (auditd)")
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private /dev/log")
def test_audisp_syslog_writes_each_record_to_syslog(tmp_path):
    """Debian's audisp-syslog, fed by the dispatcher, sends each record line as one syslog
    message: `<PRI>Mmm dd hh:mm:ss TAG: RECORD`, PRI and TAG from its args (LOG_NOTICE and
    LOG_LOCAL3: 19*8+5, tag "audispd"), the EOE lines too, as auditd hands them over. The
    socket is the test's own /dev/log on a private /dev (a tmpfs in a mount namespace);
    the system's /dev is never touched."""
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "syslog.conf").write_text(
        f"active = yes\ndirection = out\npath = {AUDISP_SYSLOG}\ntype = always\n"
        "args = LOG_NOTICE LOG_LOCAL3\nformat = string\n")
    script = ('mount -t tmpfs -o mode=755 tmpfs /dev && mknod -m 666 /dev/null c 1 3 && '
              'exec "$@"')
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, str(HERE / "plugin_feed.py"), str(tmp_path / "plugins.d"),
         str(GOLDEN_RAW), "--syslog", "/dev/log"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["lost"] == 0 and got["notices"] == []
    want = [ln.decode() for ev in split_events(GOLDEN_RAW.read_bytes())
            for ln in ev.splitlines()]
    # audisp-syslog announces itself first (`<14>... syslog plugin initialized ...`)
    own = [m for m in got["syslog"] if "plugin initialized" in m]
    assert len(own) == 1, got["syslog"][:3]
    messages = [m for m in got["syslog"] if m not in own]
    assert len(messages) == len(want)
    form = re.compile(r"<157>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d audispd: (.*)", re.S)
    bodies = []
    for m in messages:
        match = form.fullmatch(m)
        assert match, m
        bodies.append(match.group(1).rstrip("\n"))
    assert bodies == want
