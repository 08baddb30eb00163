"""`audtrace kill` against the kernel's own audit records of the same syscalls.

The real command runs with `--source both`: kernel audit (rules added over netlink) and the
eBPF probes write into one log. Every signal syscall is made by a fresh process; each eBPF
event is compared field by field with the kernel's event for the same call, and the log is
read back with the real ausearch and aureport.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
from audtrace.compat.record import parse_line, split_fields
from helpers import act, wait_for

pytestmark = pytest.mark.kernel

ACTIONS = ["kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"]
SYSCALL_NR = {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
              "rt_tgsigqueueinfo": 297, "pidfd_send_signal": 424}
# fields whose value may differ between the sources for a reason outside the syscall:
# none for SYSCALL but the source marker; see compare() for the time stamp
EBPF_ONLY = {"src"}
# LSM labels (subj=, obj=) that kernel audit adds where an LSM such as AppArmor is active:
# audtrace does not read them (README, "Records")
AUDIT_ONLY = {"subj", "obj"}


def events(text: str) -> dict[tuple, list[tuple[str, dict[str, str]]]]:
    """Log text -> {(sec, msec, serial): [(type, fields)]}."""
    out: dict[tuple, list] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        _node, rtype, sec, msec, serial, body = parse_line(line)
        out.setdefault((sec, msec, serial), []).append((rtype, dict(split_fields(body))))
    return out


def by_source(evs: dict) -> tuple[list, list]:
    ebpf, audit = [], []
    for ident, recs in evs.items():
        (ebpf if recs[0][1].get("src") == "ebpf" else audit).append((ident, recs))
    return ebpf, audit


def find(evs: list, pid: int, nr: int) -> list:
    return [(i, r) for i, r in evs
            if r[0][0] == "SYSCALL" and r[0][1]["pid"] == str(pid)
            and r[0][1]["syscall"] == str(nr)]


def compare(ebpf_ev, audit_ev) -> list[str]:
    """Every field audit wrote must be in the eBPF event with the same value."""
    diffs = []
    (e_id, e_recs), (a_id, a_recs) = ebpf_ev, audit_ev
    # audit stamps with the coarse clock at entry (up to a tick earlier); audtrace converts
    # CLOCK_MONOTONIC with an offset sampled in user space (a slow machine skews it by ms)
    e_ms, a_ms = e_id[0] * 1000 + e_id[1], a_id[0] * 1000 + a_id[1]
    if not -10 <= e_ms - a_ms <= 10:
        diffs.append(f"time {e_ms} vs audit {a_ms}")
    e_types = [t for t, _ in e_recs]
    a_types = [t for t, _ in a_recs]
    if e_types != a_types:
        diffs.append(f"record types {e_types} vs audit {a_types}")
    for (et, ef), (at, af) in zip(e_recs, a_recs, strict=False):
        if et != at:
            continue
        for name, value in af.items():
            if name == "key" or name in AUDIT_ONLY:
                continue
            if ef.get(name) != value:
                diffs.append(f"{at}.{name}: ebpf {ef.get(name)} audit {value}")
        extra = set(ef) - set(af) - EBPF_ONLY - {"key"}
        if extra:
            diffs.append(f"{at}: ebpf has extra fields {sorted(extra)}")
    return diffs


# events reach user space through the ring buffer where the kernel has one, else through
# per-CPU perf buffers: both paths, on this kernel (AUDTRACE_OUTPUT=perf forces the second)
OUTPUTS = {"ring buffer": {}, "perf buffers": {"AUDTRACE_OUTPUT": "perf"}}


@pytest.fixture(params=list(OUTPUTS))
def both_log(tracers, tmp_path, request):
    log = tmp_path / "audit.log"
    t = tracers(["kill", "--sig", "15,12", "--source", "both", "-k", "audtrace-test"], log,
                env=OUTPUTS[request.param])
    line = next(s for s in t.stderr if s.startswith("audtrace: tracing"))
    assert request.param in line, line
    return t, log


def test_every_signal_syscall_matches_kernel_audit(both_log):
    tracer, log = both_log
    done = [act(a, 15 if i % 2 == 0 else 12) for i, a in enumerate(ACTIONS)]
    done.append(act("kill", 15, "--uid", "65534"))          # refused: EPERM
    done.append(act("tgkill", 12, "--loginuid", "4242"))    # a login uid and session
    done.append(act("kill", 9))                              # not asked for: no event
    assert wait_for(lambda: len(by_source(events(tracer.text()))[1]) >= len(done) - 1, 15)
    assert tracer.stop() == 0
    ebpf, audit = by_source(events(log.read_text()))
    for d in done:
        nr = SYSCALL_NR[d["action"]]
        e, a = find(ebpf, d["pid"], nr), find(audit, d["pid"], nr)
        if d["sig"] == 9:
            assert e == [] and a == [], f"SIGKILL was not asked for: {d}"
            continue
        assert len(a) == 1, f"kernel audit saw {len(a)} events for {d}"
        assert len(e) == 1, f"eBPF saw {len(e)} events for {d}"
        assert compare(e[0], a[0]) == [], d
        syscall = e[0][1][0][1]
        assert syscall["exit"] == str(d["ret"])
        assert syscall["success"] == ("yes" if d["ret"] == 0 else "no")
        assert syscall["key"] == '"audtrace-test"'
    refused = next(d for d in done if d["ret"] != 0)
    assert refused["ret"] == -1
    login = next(d for d in done if d["action"] == "tgkill" and d["sig"] == 12
                 and find(ebpf, d["pid"], 234)
                 and find(ebpf, d["pid"], 234)[0][1][0][1]["auid"] == "4242")
    assert login


def test_refused_target_is_named_though_gone_when_the_event_is_read(both_log):
    """EPERM generates no signal, yet audit's OBJ_PID names the target. The tracer is stopped
    while the sender is refused and its target killed and reaped: the target is taken in
    the kernel at syscall exit, never looked for after the fact."""
    tracer, log = both_log
    tracer.proc.send_signal(signal.SIGSTOP)
    try:
        refused = act("kill", 15, "--uid", "65534")
        gone = act("tkill", 12, "--gone")                   # ESRCH: no target to name
    finally:
        tracer.proc.send_signal(signal.SIGCONT)
    assert refused["ret"] == -1 and gone["ret"] == -3
    assert wait_for(lambda: all(find(by_source(events(tracer.text()))[0], d["pid"], nr)
                                for d, nr in ((refused, 62), (gone, 200))), 15)
    assert wait_for(lambda: len(by_source(events(tracer.text()))[1]) >= 2, 15)
    assert tracer.stop() == 0
    ebpf, audit = by_source(events(log.read_text()))
    for d, nr, types in ((refused, 62, ["SYSCALL", "OBJ_PID", "PROCTITLE"]),
                         (gone, 200, ["SYSCALL", "PROCTITLE"])):
        (e,), (a,) = find(ebpf, d["pid"], nr), find(audit, d["pid"], nr)
        assert [t for t, _ in a[1]] == types, a
        assert compare(e, a) == [], d
    obj = find(ebpf, refused["pid"], 62)[0][1][1][1]
    assert obj["opid"] == str(refused["target"]) and obj["ocomm"] == '"sleep"'


def test_ausearch_and_aureport_read_the_log(both_log):
    if not shutil.which("ausearch"):
        pytest.skip("ausearch not installed")
    tracer, log = both_log
    d = act("kill", 15)
    assert wait_for(lambda: len(find(by_source(events(tracer.text()))[0], d["pid"], 62)) == 1)
    assert tracer.stop() == 0

    def ausearch(*args: str) -> str:
        r = subprocess.run(["ausearch", "-if", str(log), *args], capture_output=True, text=True)
        return r.stdout

    # found by syscall, by pid, by key, with -i; one event per source, never merged
    raw = ausearch("-sc", "kill", "-p", str(d["pid"]))
    assert raw.count("type=SYSCALL") == 2 and raw.count("src=ebpf") == 3
    assert "type=OBJ_PID" in raw and f"opid={d['target']}" in raw
    assert ausearch("-k", "audtrace-test", "-p", str(d["pid"])).count("type=SYSCALL") == 2
    interp = ausearch("-i", "-p", str(d["pid"]))
    assert interp.count("syscall=kill") == 2 and interp.count("a1=SIGTERM") == 2
    assert interp.count("signal_actor.py kill 15") == 2       # PROCTITLE decoded
    report = subprocess.run(["aureport", "-if", str(log), "-s", "--summary", "-i"],
                            capture_output=True, text=True).stdout
    counts = {line.split()[1]: int(line.split()[0]) for line in report.splitlines()
              if len(line.split()) == 2 and line.split()[0].isdigit()}
    assert counts.get("kill", 0) >= 2, report


def test_kernel_generated_signals(tracers, tmp_path):
    """A segfault and a SIGPIPE: no syscall sent them, kernel audit has nothing."""
    log = tmp_path / "k.log"
    tracer = tracers(["kill", "--sig", "SEGV,PIPE"], log)
    crash = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import os, ctypes; print(os.getpid(), flush=True); ctypes.string_at(0)"],
        capture_output=True, text=True)
    assert crash.returncode == -11
    crash_pid = int(crash.stdout.split()[0])
    pipe = subprocess.run(["/usr/bin/python3", "-c",
                           "import os, signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL);"
                           "r, w = os.pipe(); os.close(r); print(os.getpid(), flush=True);"
                           " os.write(w, b'x')"], capture_output=True, text=True)
    assert pipe.returncode == -13
    pipe_pid = int(pipe.stdout.split()[0])
    assert wait_for(lambda: tracer.text().count("\n") >= 2)
    tracer.stop()
    found = {}
    for recs in events(log.read_text()).values():
        rtype, fields = recs[0]
        assert rtype == "USER" and "syscall" not in fields     # no syscall is invented
        msg = dict(split_fields(fields["msg"].strip("'")))
        found[(fields["pid"], msg["sig"])] = msg
    segv = found[(str(crash_pid), "11")]
    assert segv["opid"] == str(crash_pid) and int(segv["si_code"]) > 0   # SEGV_MAPERR
    sigpipe = found[(str(pipe_pid), "13")]
    assert sigpipe["opid"] == str(pipe_pid) and sigpipe["op"] == "signal-generate"
    if shutil.which("ausearch"):
        r = subprocess.run(["ausearch", "-if", str(log), "-p", str(crash_pid), "-i"],
                           capture_output=True, text=True)
        assert "sig=SIGSEGV" in r.stdout


def test_lost_events_are_counted_never_silent(tracers, tmp_path):
    """A burst into a one-page buffer: every signal is either written or counted lost."""
    burst = 3000
    target = subprocess.Popen(["/usr/bin/python3", "-c",
                               "import signal, time; signal.signal(signal.SIGUSR2, signal.SIG_IGN);"
                               " time.sleep(60)"])
    try:
        time.sleep(0.2)
        log = tmp_path / "lost.log"
        tracer = tracers(["kill", "--sig", "USR2", "--target-pid", str(target.pid),
                          "--buffer", "4K"], log)
        subprocess.run(["/usr/bin/python3", "-c",
                        f"import os\nfor _ in range({burst}): os.kill({target.pid}, 12)"],
                       check=True)
        time.sleep(0.5)
        assert tracer.stop() == 0
    finally:
        target.kill()
        target.wait()
    text = log.read_text()
    written = text.count("type=SYSCALL ")
    lost_records = [dict(split_fields(line.split("): ", 1)[1])) for line in text.splitlines()
                    if line.startswith("type=DAEMON_ERR ")]
    lost = sum(int(r["lost"].strip('"')) for r in lost_records if r["source"] == '"ebpf"')
    assert lost > 0, "a one-page buffer should overflow on this burst"
    assert written + lost == burst
    summary = next(line for line in tracer.stderr if "events (" in line)
    assert f"lost: ebpf {lost}" in summary
    if shutil.which("ausearch"):
        r = subprocess.run(["ausearch", "-if", str(log), "-m", "DAEMON_ERR"],
                           capture_output=True, text=True)
        assert "lost-events" in r.stdout


@pytest.mark.parametrize("fmt", ["enriched", "interpreted", "json"])
def test_output_formats(tracers, tmp_path, fmt):
    """The same kill in each format: ENRICHED read back by ausearch, `-i` text, JSON lines."""
    import orjson

    log = tmp_path / f"{fmt}.log"
    tracer = tracers(["kill", "--sig", "USR2", "--format", fmt, "-k", "fmt"], log)
    d = act("kill", 12)
    assert wait_for(lambda: str(d["pid"]) in tracer.text())
    assert tracer.stop() == 0
    text = log.read_text()
    if fmt == "enriched":
        assert "\x1d" in text and 'UID="root"' in text
        r = subprocess.run(["ausearch", "-if", str(log), "-p", str(d["pid"]), "-i"],
                           capture_output=True, text=True)
        assert "syscall=kill" in r.stdout and "a1=SIGUSR2" in r.stdout
    elif fmt == "interpreted":
        assert f"pid={d['pid']}" in text and "syscall=kill" in text and "a1=SIGUSR2" in text
        assert text.startswith("----")
    else:
        objs = [orjson.loads(line) for line in text.splitlines()]
        ev = next(o for o in objs if "SYSCALL" in o and o["SYSCALL"].get("pid") == d["pid"])
        assert ev["SYSCALL"]["syscall"] in (62, "kill") and ev["SOURCE"] == "ebpf"
        obj = ev["OBJ_PID"]
        obj = obj[0] if isinstance(obj, list) else obj
        assert obj["opid"] == d["target"]
