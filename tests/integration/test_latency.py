"""`audtrace latency` against what the timed processes measured themselves.

Two actor processes (tests/integration/latency_actor.py) make the same calls of known
duration; each measures every call from user space, which brackets the kernel's own view
(requested duration <= kernel latency <= user-space latency). Two tracers run at once: one
selects actor A by --pid (JSON report, per process, heatmap), the other actor B by --comm
(text report, slow calls as audit events, read back with the real ausearch).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from audtrace.compat.record import parse_line, split_fields
from audtrace.tracer.latency.histogram import bounds, slot
from helpers import REPO, follow_stderr

pytestmark = pytest.mark.kernel

ACTOR = Path(__file__).with_name("latency_actor.py")
MS = 1_000_000
PLAN = (
    f"nanosleep:{int(2.5 * MS)}*7;nanosleep:{20 * MS}*3;clock_nanosleep:{5 * MS}*4;read:{25 * MS}*3"
)
REQUESTED = {
    "nanosleep": [int(2.5 * MS)] * 7 + [20 * MS] * 3,
    "clock_nanosleep": [5 * MS] * 4,
    "read": [25 * MS] * 3,
}
NR = {"nanosleep": 35, "clock_nanosleep": 230, "read": 0}
# Each call's kernel latency x lies in [lower, upper]: no less than the sleep asked for, no
# more than the user-space measurement around the call. The read's writer may start its wait
# before the read begins (a preempted reader): its bound is looser.
LOWER = {"nanosleep": 0.99, "clock_nanosleep": 0.99, "read": 0.7}


@dataclass
class Run:
    proc: subprocess.Popen
    stderr: list[str] = field(default_factory=list)
    stdout: str = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.stdout, _ = self.proc.communicate(timeout=60)
        self._reader.join(timeout=5)
        assert self.proc.returncode == 0, "\n".join(self.stderr)


def latency(*args: str) -> Run:
    """Start `audtrace latency ARGS`; return once it says it is tracing."""
    proc = subprocess.Popen(
        [str(REPO / "audtrace"), "latency", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run = Run(proc)
    run._reader = follow_stderr(proc, run.stderr, 120, "audtrace latency")
    return run


class Actor:
    def __init__(self, comm: str, plan: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ACTOR), comm, plan],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        word, pid = self.proc.stdout.readline().split()
        assert word == "ready"
        self.pid = int(pid)

    def go(self) -> dict[str, list[int]]:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=30)


@pytest.fixture
def actors():
    started: list[Actor] = []

    def make(comm: str, plan: str) -> Actor:
        a = Actor(comm, plan)
        started.append(a)
        return a

    yield make
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()


def reports(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def entry(report: dict, name: str) -> dict:
    return next(e for e in report["entries"] if e["name"] == name)


def check_buckets(buckets: list[dict], lower: list[int], upper: list[int]) -> None:
    """The histogram can be explained call by call: each call's bucket lies between the
    buckets of its lower and upper bound (greedy matching of intervals, exact for them)."""
    free = Counter({b["slot"]: b["count"] for b in buckets})
    assert sum(free.values()) == len(lower)
    for lo, hi in sorted(zip(lower, upper, strict=True), key=lambda c: (slot(c[1]), slot(c[0]))):
        k = next((k for k in range(slot(lo), slot(hi) + 1) if free[k]), None)
        assert k is not None, f"no bucket for a call in [{lo}, {hi}] ns: {dict(free)}"
        free[k] -= 1


def nearest_rank(values: list[int], q: int) -> int:
    return sorted(values)[max(1, math.ceil(q * len(values) / 100)) - 1]


def bounds_of(name: str, measured: list[int]) -> tuple[list[int], list[int]]:
    return [int(r * LOWER[name]) for r in REQUESTED[name]], measured


def test_known_durations_filters_slow_calls_and_heatmap(actors, tmp_path):
    a = actors("lat-a", PLAN)
    b = actors("lat-b", PLAN)
    svg, log = tmp_path / "heat.svg", tmp_path / "slow.log"
    common = ["--syscall", "nanosleep,clock_nanosleep,read"]
    by_pid = latency(
        *common,
        "--pid",
        str(a.pid),
        "--per-process",
        "--format",
        "json",
        "--heatmap",
        str(svg),
        "--heatmap-step",
        "0.25",
    )
    by_comm = latency(
        *common, "--comm", "lat-b", "--slower-than", "10ms", "-o", str(log), "-k", "latslow"
    )
    done_a, done_b = {}, {}
    ta = threading.Thread(target=lambda: done_a.update(a.go()))
    ta.start()
    done_b.update(b.go())
    ta.join()
    by_pid.stop()
    by_comm.stop()
    a.finish()
    b.finish()

    # --- A by pid: counts, buckets, percentiles, exact min/max, only A ------------------
    total = [r for r in reports(by_pid.stdout) if r["report"] == "total"]
    assert len(total) == 1, by_pid.stdout
    for name, measured in done_a.items():
        e = entry(total[0], name)
        assert e["count"] == len(measured) == len(REQUESTED[name]), (name, e)
        lower, upper = bounds_of(name, measured)
        check_buckets(e["buckets"], lower, upper)
        assert min(lower) <= e["min_ns"] <= min(upper)
        assert max(lower) <= e["max_ns"] <= max(upper)
        for q in (50, 90, 99):
            p = e["percentiles"][f"p{q}"]
            # order statistics keep the bracket: lower's q-th <= true q-th <= upper's q-th
            lo_k, hi_k = slot(nearest_rank(lower, q)), slot(nearest_rank(upper, q))
            assert lo_k <= slot(p["bucket_ns"][0]) <= hi_k, (name, q, p)
            assert tuple(p["bucket_ns"]) == bounds(slot(p["bucket_ns"][0]))
            assert p["bucket_ns"][0] <= p["ns"] <= p["bucket_ns"][1]
            assert e["min_ns"] <= p["ns"] <= e["max_ns"]
        assert [p["pid"] for p in e["processes"]] == [a.pid]
        assert e["processes"][0]["comm"] == "lat-a"
    # the median nanosleep is a fast one, the 90th percentile a slow one (buckets apart)
    ns = entry(total[0], "nanosleep")["percentiles"]
    assert ns["p50"]["bucket_ns"][1] <= ns["p90"]["bucket_ns"][0]
    assert ns["p90"]["bucket_ns"][0] >= 16_777_216

    # --- B by comm: the text report counts B's calls only ------------------------------
    text = by_comm.stdout
    counts = dict(re.findall(r"^(\w+): (\d+) calls", text, re.M))
    assert {k: int(v) for k, v in counts.items()} == {k: len(v) for k, v in done_b.items()}
    assert "interpolated" in text

    # --- slow calls of B as audit events, exactly those over 10 ms ----------------------
    events: dict[tuple, dict] = {}
    for line in log.read_text().splitlines():
        _n, rtype, sec, msec, serial, body = parse_line(line)
        if rtype == "SYSCALL":
            events[(sec, msec, serial)] = dict(split_fields(body))
    got = Counter(int(f["syscall"]) for f in events.values())
    slow_b = Counter()
    for name, measured in done_b.items():
        # surely slow: even the lower bound is over 10 ms; maybe: only the upper bound is
        lower, upper = bounds_of(name, measured)
        sure = sum(1 for lo in lower if lo > 10 * MS)
        maybe = sum(1 for lo, hi in zip(lower, upper, strict=True) if lo <= 10 * MS < hi)
        assert sure <= got[NR[name]] <= sure + maybe, (name, got, measured)
        slow_b[NR[name]] = got[NR[name]]
    assert all(f["pid"] == str(b.pid) and f["comm"] == '"lat-b"' for f in events.values())
    assert all(int(f["latency_ns"].strip('"')) >= 10 * MS for f in events.values())
    n_slow = sum(slow_b.values())
    if shutil.which("ausearch"):
        out = subprocess.run(
            ["ausearch", "-if", str(log), "-k", "latslow", "--raw"], capture_output=True, text=True
        )
        assert out.stdout.count("type=SYSCALL") == n_slow, out.stderr
        out = subprocess.run(
            ["ausearch", "-if", str(log), "-p", str(b.pid), "-sc", "nanosleep", "-i"],
            capture_output=True,
            text=True,
        )
        assert out.stdout.count("type=SYSCALL") == slow_b[NR["nanosleep"]], out.stderr
        assert "syscall=nanosleep" in out.stdout and "latency_ns=" in out.stdout

    # --- the heatmap: one cell per (column, bucket), every call of A in a cell ------------
    root = ET.parse(svg).getroot()
    cells = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "cell"]
    cols = {c.get("data-start") for c in cells}
    rows = 0
    for name in ("nanosleep", "clock_nanosleep", "read"):
        slots = [b["slot"] for b in entry(total[0], name)["buckets"]]
        rows += max(slots) - min(slots) + 1
    assert len(cells) == len(cols) * rows
    assert sum(int(c.get("data-count")) for c in cells) == sum(len(v) for v in done_a.values())


# each way of timing the calls (tracer/subcommands/latency.py, Mechanism), and what the
# tracing line must name for it
MECHANISMS = {
    "tp_btf": (["--syscall-via", "tp_btf"], ["tp_btf sys_enter/sys_exit", "per-CPU arrays"]),
    "raw": (["--syscall-via", "raw"], ["raw tracepoints sys_enter/sys_exit", "per-CPU arrays"]),
    "tracepoints": (
        ["--syscall-via", "tracepoints"],
        ["per-syscall tracepoints", "per-CPU arrays"],
    ),
    "per-process": (["--per-process"], ["per-CPU hashes"]),
}


@pytest.mark.parametrize("mech", sorted(MECHANISMS))
def test_no_count_lost_across_interval_flips_and_exit_group(actors, mech):
    from audtrace.tracer.ebpf import features, tp_btf

    args, said = MECHANISMS[mech]
    if mech == "tp_btf" and not tp_btf.available()[0]:
        pytest.skip(f"no tp_btf here: {tp_btf.available()[1]}")
    a = actors("lat-x", "getppid:1000*40;exits:4")
    run = latency(
        "--syscall",
        "getppid,exit_group",
        "--comm",
        "lat-x",
        "--interval",
        "0.1",
        "--format",
        "json",
        *args,
    )
    tracing = next(line for line in run.stderr if line.startswith("audtrace: tracing"))
    for words in said:
        assert words in tracing, tracing
    # the start stamps live in task storage wherever the kernel allows it
    raw = "raw tracepoints" in tracing or "tp_btf" in tracing
    ts_ok, _ = features.task_storage_available("raw_tracepoint" if raw else "tracepoint")
    assert ("start stamps in task storage" in tracing) == ts_ok, tracing
    done = a.go()
    run.stop()
    a.finish()
    reps = reports(run.stdout)
    intervals = [r for r in reps if r["report"] == "interval"]
    total = [r for r in reps if r["report"] == "total"][0]
    assert len(intervals) >= 5
    assert entry(total, "getppid")["count"] == done["getppid"][0] == 40_000
    assert sum(entry(r, "getppid")["count"] for r in intervals) <= 40_000
    # every child's exit_group, measured to its last context switch
    ex = entry(total, "exit_group")
    assert ex["count"] == len(done["exits"]) == 4
    assert ex["min_ns"] > 0


def test_function_latency_says_what_is_missing():
    from audtrace.tracer.ebpf import features

    fentry, why_f = features.fentry_available()
    kprobes, why_k = features.kprobes_available()
    if fentry or kprobes:
        pytest.skip("this kernel offers fentry or kprobes: see the kprobe tests")
    out = subprocess.run(
        [str(REPO / "audtrace"), "latency", "--function", "do_nanosleep", "--duration", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "fentry" in lines[0] and "kprobe" in lines[0] and why_k in lines[0]
    doc = subprocess.run(
        [str(REPO / "audtrace"), "doctor", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    mech = json.loads(doc.stdout)["mechanisms"]["latency --function"]
    assert mech.startswith("unavailable")


@pytest.mark.kprobe
@pytest.mark.parametrize("via", ["fentry", "kprobe"])
def test_function_latency(actors, via):
    from audtrace.tracer.ebpf import features

    ok, why = features.fentry_available() if via == "fentry" else features.kprobes_available()
    if not ok:
        pytest.skip(f"no {via} on this kernel: {why}")
    a = actors("lat-f", f"nanosleep:{20 * MS}*3;clock_nanosleep:{int(2.5 * MS)}*5")
    run = latency(
        "--function",
        "hrtimer_nanosleep",
        "--function-via",
        via,
        "--pid",
        str(a.pid),
        "--format",
        "json",
    )
    done = a.go()
    run.stop()
    a.finish()
    total = [r for r in reports(run.stdout) if r["report"] == "total"][0]
    e = entry(total, "hrtimer_nanosleep")
    measured = done["nanosleep"] + done["clock_nanosleep"]
    requested = [20 * MS] * 3 + [int(2.5 * MS)] * 5
    assert e["kind"] == "function" and e["count"] == len(measured)
    check_buckets(e["buckets"], [int(r * LOWER["nanosleep"]) for r in requested], measured)
    assert any(via in line for line in run.stderr if line.startswith("audtrace: tracing"))


@pytest.mark.kprobe
def test_function_without_btf_is_timed_by_kprobe(actors):
    """fentry attaches by BTF, which Debian 12's 6.1 lacks for its syscall wrappers: asked for
    no mechanism, latency --function takes kprobes for such a function, says why, and counts
    every call."""
    from audtrace.tracer.ebpf import features

    fn = "__x64_sys_getppid"
    if not features.kernel_function_exists(fn):
        pytest.skip(f"no {fn} on this kernel")
    if features.function_in_btf(fn) is not False:
        pytest.skip(f"this kernel's BTF describes {fn} (or there is none): fentry's case")
    ok, why = features.kprobes_available()
    if not ok:
        pytest.skip(f"no kprobes on this kernel: {why}")
    a = actors("lat-k", "getppid:500*4")
    run = latency("--function", fn, "--pid", str(a.pid), "--format", "json")
    tracing = next(line for line in run.stderr if line.startswith("audtrace: tracing"))
    assert f"kprobe on {fn} (no fentry/fexit: {fn} is not in the kernel's BTF)" in tracing
    done = a.go()
    run.stop()
    a.finish()
    total = [r for r in reports(run.stdout) if r["report"] == "total"][0]
    e = entry(total, fn)
    assert e["kind"] == "function" and e["count"] == done["getppid"][0] == 2_000


def test_tp_btf_refused_falls_back_to_raw_tracepoints(monkeypatch):
    """A kernel that loads the probe's empty tp_btf program but refuses the real ones (a
    stricter verifier) gets raw tracepoints: nothing of the refused pair stays attached, the
    tracing line follows, and the calls are still counted."""
    import contextlib

    from audtrace.tracer.ebpf import probes, system, tp_btf
    from audtrace.tracer.latency.report import Counters
    from audtrace.tracer.subcommands import latency as lat

    if not tp_btf.available()[0]:
        pytest.skip(f"no tp_btf here: {tp_btf.available()[1]}")
    real_load = tp_btf.load

    def refuse_exit(insns, tracepoint, name):
        if tracepoint == "sys_exit":       # the enter program is in by then
            raise tp_btf.TpBtfError(13, "tp_btf sys_exit refused (EACCES): by the test")
        return real_load(insns, tracepoint, name)

    monkeypatch.setattr(tp_btf, "load", refuse_exit)
    req = lat.LatencyRequest(syscalls=["getppid"])
    sub = lat.subcommand(req, [])
    assert "tp_btf sys_enter/sys_exit" in sub.mechanism
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(system.tracefs_mounted(lambda _m: None))
        stack.enter_context(system.header_tree_for_bcc(system.find_header_tree()))
        prog = probes.Program(sub.program, probes.load_layout(), root, probes.PAGE * 4)
        stack.callback(prog.close)
        assert not req.mechanism.btf
        assert sub.mechanism.startswith("raw tracepoints sys_enter/sys_exit (tp_btf refused:")
        assert not [k for k in prog.bpf.raw_tracepoint_fds if k.startswith(b"tp_btf:")]
        assert b"lat_btf_enter" not in prog.bpf.funcs
        assert {b"sys_enter", b"sys_exit"} <= set(prog.bpf.raw_tracepoint_fds)
        subprocess.run([sys.executable, "-c", "import os\nfor _ in range(500): os.getppid()"],
                       check=True)
        got = Counters(req.timed(), req.mechanism.arrays).take(prog.bpf, final=True)
        assert got[(req.timed()[0], 0)].count >= 500
