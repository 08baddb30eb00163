"""audtrace's cost, side by side with kernel audit: `sudo ./tests/bench/run [--short]`.

The parts (see README.md, "Performance"):
  overhead    ns per syscall of a C loop (getppid: untraced; kill(self, 0): traced, filter
              does not match; kill(self, SIGUSR2 ignored): traced, matches) under: nothing,
              `audtrace kill --sig 15,12`, the same rules in kernel audit with a real auditd
              logging to a file, `audtrace kill --sig 15,12 --source audit`; conditions
              interleaved (Williams design) and compared within each round;
  hooks       the same ns per call for a request of one syscall (`rules -S kill`), six
              (`kill`) and forty rare ones (`rules`), each on per-syscall tracepoints, on raw
              tracepoints (AUDTRACE_HOOKS) and as audtrace chooses, beside one kernel audit
              rule without auditd; the tracing lines say which hook each run took;
  throughput  a SIGUSR2 storm at rising rates from several senders to a target that ignores
              it, seen by audtrace (raw, json) and by auditd: highest rate kept with nothing
              lost, what was lost above it (counted by each tool, and checked against what
              the senders sent) and the CPU each used;
  events      Python CPU per event in user space alone, per output format (event_path.py);
  burst       one sender, kill() back to back for half a second, with the default buffer:
              what each tool kept, and how fast it let the sender go;
  startup     seconds to `audtrace: tracing` and peak RSS per subcommand, and where the time
              and memory of start-up go (import, BTF, compile, load);
  latency     `audtrace latency`'s cost per timed call beside bcc's syscount -L, by the
              mechanism audtrace picks and by each it can be asked for;
  latency-function
              `audtrace latency --function` beside bcc's funclatency (kprobe/kretprobe),
              where the kernel has kprobes or fentry (the stock-kernel lane, vagrant/), by
              the mechanism audtrace picks and, where that is fentry, by kprobe as well;
  audit-cost  what an audit rule on getppid adds per call, as `audtrace latency --audit-cost`
              reports it, beside the C loop's own CPU time with and without the rule (a real
              auditd logging both).
Prints tables of ratios, writes every raw number as JSON. --rounds, --calls and --reps change
the scale of the parts that time a C loop (e.g. fewer rounds under emulation, where each start
of a BCC tool takes minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import harness
import plan
from audtrace.tracer.subcommands import SUBCOMMANDS, kill

SIG_TRACED = "15,12"
SIGUSR2 = 12
CONDITIONS = ("none", "audtrace", "auditd", "audtrace-audit")
MODES = ("getppid", "kill0", "killsig")
TRACERS = ("audtrace-raw", "audtrace-json", "auditd")


@dataclass(frozen=True)
class Scale:
    rounds: int
    calls: int  # per block, untraced and unmatched modes
    match_calls: int  # per block, matching mode (each call is an event)
    reps: int  # blocks per measurement; the median is kept
    rates: tuple[int, ...]  # storm rates, signals per second in total
    senders: int
    storm_seconds: float
    startup_reps: int
    events: int  # events of the per-event CPU measurement
    burst_seconds: float


FULL = Scale(
    rounds=4,
    calls=500_000,
    match_calls=20_000,
    reps=5,
    rates=(5_000, 10_000, 20_000, 50_000, 100_000, 200_000),
    senders=2,
    storm_seconds=3.0,
    startup_reps=3,
    events=100_000,
    burst_seconds=0.5,
)
SHORT = Scale(
    rounds=1,
    calls=100_000,
    match_calls=5_000,
    reps=3,
    rates=(5_000,),  # one storm: proves the part works; the full run climbs
    senders=2,
    storm_seconds=1.0,
    startup_reps=1,
    events=5_000,
    burst_seconds=0.1,
)


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def rule_lines(signals: list[int], key: str) -> list[str]:
    """audtrace's own declaration of the equivalent audit rules, as auditctl text."""
    return [str(r) for r in kill.audit_rules(signals, [key])]


# ---- 1. per-syscall overhead -----------------------------------------------------------------


@contextlib.contextmanager
def condition(name: str, work: Path) -> Iterator[dict]:
    """Set up one condition; yields a dict the condition fills with what it saw."""
    seen: dict = {}
    out = work / f"{name}.log"
    out.unlink(missing_ok=True)
    if name == "none":
        yield seen
    elif name in ("audtrace", "audtrace-audit"):
        args = ["kill", "--sig", SIG_TRACED]
        if name == "audtrace-audit":
            args += ["--source", "audit"]
        with harness.audtrace(args, out) as tr:
            yield seen
        seen["lost"] = tr.summary_lost()
    elif name == "auditd":
        with (
            harness.auditd(work),
            harness.audit_rules(rule_lines([15, 12], "bench"), backlog=harness.DEBIAN_BACKLOG),
        ):
            lost0 = harness.audit_status().get("lost", 0)
            yield seen
            seen["lost"] = harness.audit_status().get("lost", 0) - lost0
    else:
        raise ValueError(name)


def time_calls(loop: Path, mode: str, n: int, reps: int) -> tuple[float, float]:
    """(wall, CPU) ns per call, each the median of the blocks. CPU time is the cost of the
    calls themselves; wall time adds waits, and other tasks' turns on a shared machine."""
    out = subprocess.run(
        [str(loop), "calls", mode, str(n), str(reps)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    blocks = [tuple(map(float, line.split())) for line in out.splitlines() if line.strip()]
    return plan.median([b[0] for b in blocks]), plan.median([b[1] for b in blocks])


def _summary(rounds: list[dict[str, float]], conds: tuple[str, ...]) -> dict:
    r, a = plan.ratios(rounds, "none"), plan.added(rounds, "none")
    return {
        c: {
            "ns": plan.summarize([x[c] for x in rounds]).as_dict(),
            "ratio": plan.summarize(r[c]).as_dict(),
            "added_ns": plan.summarize(a[c]).as_dict(),
        }
        for c in conds
    }


def overhead(loop: Path, work: Path, scale: Scale) -> dict:
    cpu: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    wall: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    lost: list[dict] = []
    for i, order in enumerate(plan.schedule(CONDITIONS, scale.rounds)):
        log(f"overhead round {i + 1}/{scale.rounds}: {' '.join(order)}")
        per_cpu: dict[str, dict[str, float]] = {m: {} for m in MODES}
        per_wall: dict[str, dict[str, float]] = {m: {} for m in MODES}
        for cond in order:
            with condition(cond, work) as seen:
                for mode in MODES:
                    n = scale.match_calls if mode == "killsig" else scale.calls
                    per_wall[mode][cond], per_cpu[mode][cond] = time_calls(
                        loop, mode, n, scale.reps
                    )
            lost.append({"round": i, "condition": cond, "lost": seen.get("lost")})
            harness.settle()
        for m in MODES:
            cpu[m].append(per_cpu[m])
            wall[m].append(per_wall[m])
    share = {m: plan.overhead_share(cpu[m], "none", "audtrace", "auditd") for m in MODES}
    return {
        "conditions": list(CONDITIONS),
        "modes": list(MODES),
        "schedule": plan.schedule(CONDITIONS, scale.rounds),
        "rounds": cpu,
        "rounds_wall": wall,
        "summary": {m: _summary(cpu[m], CONDITIONS) for m in MODES},
        "summary_wall": {m: _summary(wall[m], CONDITIONS) for m in MODES},
        "losses": lost,
        "audtrace_share_of_auditd_added": {
            m: plan.summarize(v).as_dict() if v else None for m, v in share.items()
        },
        "rules": rule_lines([15, 12], "bench"),
    }


# ---- 1b. the syscall hooks, per request size -------------------------------------------------

# a request traces one syscall, a few (kill's six) or many (forty, none of them hot), hooked by
# per-syscall tracepoints or raw tracepoints (AUDTRACE_HOOKS), or as audtrace chooses; beside
# one kernel audit rule alone (no auditd: the rule's own cost)
# (each with a tracepoint of its own name: without one, audtrace takes the raw hooks)
_RARE = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal",
         "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
         "setfsgid", "setgroups", "setsid", "setpgid", "chroot", "pivot_root", "mount",
         "mlockall", "swapon", "swapoff", "reboot", "sethostname", "setdomainname", "acct",
         "settimeofday", "adjtimex", "clock_settime", "setpriority", "sched_setparam",
         "sched_setscheduler", "sched_setaffinity", "munlockall", "ptrace", "personality",
         "unshare", "setns", "syslog")
HOOK_REQUESTS = {
    "rules1": ["rules", "-a", "always,exit", "-F", "arch=b64", "-S", "kill", "-F", "a1=12"],
    "kill6": ["kill", "--sig", SIG_TRACED],
    "rules40": ["rules", "-a", "always,exit", "-F", "arch=b64",
                *[w for name in _RARE for w in ("-S", name)], "-F", "a1=12"],
}
HOOK_KINDS = ("tp", "raw", "auto")
HOOK_CONDITIONS = ("none", "audit-rule", *(f"{r}-{k}" for r in HOOK_REQUESTS
                                           for k in HOOK_KINDS))
HOOK_MODES = ("getppid", "kill0")


@contextlib.contextmanager
def hook_condition(name: str, work: Path) -> Iterator[dict]:
    seen: dict = {}
    if name == "none":
        yield seen
        return
    if name == "audit-rule":
        with harness.audit_rules(["-a always,exit -F arch=b64 -S kill -F a1=12"]):
            yield seen
        return
    request, kind = name.rsplit("-", 1)
    env = {"tp": "tracepoints", "raw": "raw", "auto": None}[kind]
    old = os.environ.pop("AUDTRACE_HOOKS", None)
    if env:
        os.environ["AUDTRACE_HOOKS"] = env
    try:
        with harness.audtrace(HOOK_REQUESTS[request], work / f"{name}.log") as tr:
            seen["tracing"] = next((ln for ln in tr.stderr if ln.startswith("audtrace: tracing")),
                                   "")
            yield seen
    finally:
        os.environ.pop("AUDTRACE_HOOKS", None)
        if old is not None:
            os.environ["AUDTRACE_HOOKS"] = old


def hooks(loop: Path, work: Path, scale: Scale) -> dict:
    """Added ns per untraced (getppid) and traced unmatched (kill(self, 0)) call, for each
    request size and hook, against one audit rule: ratios within each round."""
    cpu: dict[str, list[dict[str, float]]] = {m: [] for m in HOOK_MODES}
    lines: dict[str, str] = {}
    sched = plan.schedule(HOOK_CONDITIONS, scale.rounds)
    for i, order in enumerate(sched):
        log(f"hooks round {i + 1}/{scale.rounds}: {' '.join(order)}")
        per: dict[str, dict[str, float]] = {m: {} for m in HOOK_MODES}
        for cond in order:
            with hook_condition(cond, work) as seen:
                for mode in HOOK_MODES:
                    per[mode][cond] = time_calls(loop, mode, scale.calls, scale.reps)[1]
            if seen.get("tracing"):
                lines[cond] = seen["tracing"]
            harness.settle()
        for m in HOOK_MODES:
            cpu[m].append(per[m])
    return {
        "conditions": list(HOOK_CONDITIONS),
        "modes": list(HOOK_MODES),
        "schedule": sched,
        "rounds": cpu,
        "summary": {m: _summary(cpu[m], HOOK_CONDITIONS) for m in HOOK_MODES},
        "share_of_audit_added": {
            m: {c: (plan.summarize(v).as_dict() if (v := plan.overhead_share(
                cpu[m], "none", c, "audit-rule")) else None) for c in HOOK_CONDITIONS[2:]}
            for m in HOOK_MODES},
        "tracing_lines": lines,
        "loadavg": os.getloadavg(),
    }



# ---- 2. event throughput ---------------------------------------------------------------------


def count_records(path: Path, pids: set[int], fmt: str) -> tuple[int, int]:
    """(events of these sender pids, total of DAEMON_ERR lost-events records) in a log."""
    n = lost = 0
    if not path.exists():
        return 0, 0
    pid_re = re.compile(r" pid=(\d+) ")
    with path.open("rb") as f:
        for raw in f:
            line = raw.decode(errors="replace")
            if fmt == "json":
                ev = json.loads(line)
                if "SYSCALL" in ev and ev["SYSCALL"].get("pid") in pids:
                    n += 1
                if "DAEMON_ERR" in ev and ev["DAEMON_ERR"].get("op") == "lost-events":
                    lost += int(ev["DAEMON_ERR"].get("lost", 0))
            elif line.startswith("type=SYSCALL"):
                m = pid_re.search(line)
                if m and int(m.group(1)) in pids:
                    n += 1
            elif line.startswith("type=DAEMON_ERR") and "lost-events" in line:
                m = re.search(r' lost="?(\d+)', line)
                lost += int(m.group(1)) if m else 0
    return n, lost


def storm(loop: Path, rate: int, scale: Scale) -> tuple[list[subprocess.Popen], Callable]:
    """Start the target and the senders; returns them and a function that waits for the
    senders and gives (sent, seconds, sender CPU seconds, sender pids)."""
    target = subprocess.Popen([str(loop), "target"], stdout=subprocess.PIPE, text=True)
    assert target.stdout is not None
    target.stdout.readline()  # "ready": SIGUSR2 is ignored from here on
    senders = [
        subprocess.Popen(
            [
                str(loop),
                "storm",
                str(target.pid),
                str(SIGUSR2),
                str(rate / scale.senders),
                str(scale.storm_seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(scale.senders)
    ]

    def finish() -> tuple[int, float, float, set[int]]:
        sent, seconds, cpu = 0, 0.0, 0.0
        for s in senders:
            out, _ = s.communicate(timeout=scale.storm_seconds * 20 + 60)
            f = out.split()
            sent += int(f[1]) - int(f[3])  # successful kills
            seconds = max(seconds, float(f[5]))
            cpu += float(f[7]) + float(f[9])
        target.kill()
        target.wait()
        return sent, seconds, cpu, {s.pid for s in senders}

    return senders, finish


def wait_quiet(path: Path, quiet: float = 1.0, limit: float = 60) -> None:
    """Until the log has stopped growing for `quiet` seconds (the writer has drained)."""
    end, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < end:
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def throughput_step(tracer: str, rate: int, loop: Path, work: Path, scale: Scale) -> dict:
    out = work / f"storm-{tracer}-{rate}.log"
    out.unlink(missing_ok=True)
    key = f"bench-storm-{os.getpid()}"
    if tracer.startswith("audtrace"):
        fmt = tracer.split("-")[1]
        with harness.audtrace(["kill", "--sig", str(SIGUSR2), "--format", fmt], out) as tr:
            _, finish = storm(loop, rate, scale)
            sent, seconds, sender_cpu, pids = finish()
            wait_quiet(out)  # written out: the CPU from here on is the shutdown's
            busy = harness.cpu_seconds(tr.proc.pid) - tr.cpu_at_ready
        recorded, lost_records = count_records(out, pids, fmt)
        reported = tr.summary_lost()
        cpu = {"tracer": busy, "tracer_with_shutdown": tr.cpu_total - tr.cpu_at_ready}
        reported_lost = max(reported or 0, lost_records)
    else:
        with (
            harness.auditd(work) as d,
            harness.audit_rules(rule_lines([SIGUSR2], key), backlog=harness.DEBIAN_BACKLOG),
        ):
            kaudit = harness.kthread_pid("kauditd")
            k0 = harness.cpu_seconds(kaudit) if kaudit else 0.0
            d0, lost0 = d.cpu(), harness.audit_status().get("lost", 0)
            _, finish = storm(loop, rate, scale)
            sent, seconds, sender_cpu, pids = finish()
            wait_quiet(d.log)
            reported_lost = harness.audit_status().get("lost", 0) - lost0
            cpu = {
                "tracer": d.cpu() - d0,
                "kauditd": (harness.cpu_seconds(kaudit) - k0) if kaudit else None,
            }
            log_path = d.log
        recorded, _ = count_records(log_path, pids, "raw")
        lost_records = 0
    step = plan.Step(
        rate=rate, sent=sent, seconds=seconds, recorded=recorded, reported_lost=reported_lost
    )
    return {
        **asdict(step),
        "achieved": step.achieved,
        "missing": step.missing,
        "kept_up": step.kept_up(),
        "cpu_seconds": cpu,
        "sender_cpu_seconds": sender_cpu,
        "sender_ns_per_signal": sender_cpu * 1e9 / sent if sent else None,
    }


def throughput(loop: Path, work: Path, scale: Scale) -> dict:
    steps: dict[str, list[dict]] = {t: [] for t in TRACERS}
    failed: dict[str, int] = dict.fromkeys(TRACERS, 0)
    for i, rate in enumerate(scale.rates):
        order = plan.schedule(TRACERS, len(scale.rates))[i]
        for tracer in order:
            if failed[tracer] >= 2:  # two failed rates show the trend; spare the machine
                continue
            log(f"storm {rate}/s, {tracer}")
            step = throughput_step(tracer, rate, loop, work, scale)
            steps[tracer].append(step)
            failed[tracer] += 0 if step["kept_up"] else 1
            harness.settle()
    summary = {}
    for t in TRACERS:
        best, above = plan.no_loss_rate(
            [
                plan.Step(s["rate"], s["sent"], s["seconds"], s["recorded"], s["reported_lost"])
                for s in steps[t]
            ]
        )
        summary[t] = {
            "no_loss_rate": best,
            "above": [
                {
                    "rate": s.rate,
                    "achieved": s.achieved,
                    "missing": s.missing,
                    "reported_lost": s.reported_lost,
                }
                for s in above
            ],
        }
    return {
        "tracers": list(TRACERS),
        "senders": scale.senders,
        "seconds_per_step": scale.storm_seconds,
        "steps": steps,
        "summary": summary,
    }


def events_cpu(_loop: Path, _work: Path, scale: Scale) -> dict:
    """Python CPU per event of each output format, user space alone (event_path.py)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("event_path.py")),
         "--events", str(scale.events)],
        capture_output=True, text=True, check=True, timeout=1200,
    )
    return json.loads(out.stdout)


def burst(loop: Path, work: Path, scale: Scale) -> dict:
    """One sender, back to back: audtrace cannot slow a sender (BPF does not block), auditd
    makes it wait on a full backlog; what each kept of what was sent."""
    out: dict = {"seconds": scale.burst_seconds}
    one = dataclasses.replace(scale, senders=1, storm_seconds=scale.burst_seconds)
    for tracer in TRACERS:
        log(f"burst, {tracer}")
        step = throughput_step(tracer, 0, loop, work, one)
        step["kept_share"] = step["recorded"] / step["sent"] if step["sent"] else None
        out[tracer] = step
        harness.settle()
    return out


# ---- 3. start-up and memory ------------------------------------------------------------------

# what a subcommand needs on its command line to start at all (the rest start bare)
STARTUP_ARGS = {
    "rules": ["-a", "always,exit", "-F", "arch=b64", "-S", "kill", "-F", "a1=15", "-k", "bench"],
    "trace": ["--", "sleep", "30"],
    "compare": ["kill"],
    "latency": ["--syscall", "getppid"],
    "watch": ["/tmp"],
}


def startup(_loop: Path, work: Path, scale: Scale) -> dict:
    runs: dict[str, list[dict]] = {}
    # short mode: the spine only, to stay quick; the full run measures every subcommand
    names = ("kill",) if scale.startup_reps == 1 else SUBCOMMANDS
    cases = [(name, [name, *STARTUP_ARGS.get(name, [])]) for name in names]
    cases.append(("kill --source audit", ["kill", "--source", "audit"]))
    for label, args in cases:
        log(f"start-up: audtrace {' '.join(args)}")
        for _ in range(scale.startup_reps):
            out = work / "startup.log"
            try:
                with harness.audtrace(args, out) as tr:
                    pass
                runs.setdefault(label, []).append(
                    {"startup_s": tr.startup, "peak_rss_mib": tr.peak_rss_mib}
                )
            except RuntimeError as e:
                runs.setdefault(label, []).append({"error": str(e).splitlines()[-1]})
                break
    parts = json.loads(
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("startup_parts.py"))],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
            cwd="/",
        ).stdout
    )
    return {"runs": runs, "kill_parts": parts}


# ---- 4. latency subcommand -------------------------------------------------------------------

SYSCOUNT = "/usr/sbin/syscount-bpfcc"
FUNCLATENCY = "/usr/sbin/funclatency-bpfcc"
# audtrace's conditions: what it picks itself, then each mechanism it can be asked for
LATENCY_AUDTRACE = {
    "audtrace-latency": [],
    "audtrace-latency-raw": ["--syscall-via", "raw"],
    "audtrace-latency-tp": ["--syscall-via", "tracepoints"],
}
LATENCY_CONDITIONS = ("none", *LATENCY_AUDTRACE, "syscount")
# the kernel function getppid runs (x86_64's syscall wrapper), for --function and funclatency
LATENCY_FUNCTION = {"x86_64": "__x64_sys_getppid", "aarch64": "__arm64_sys_getppid"}
# --function as audtrace picks (fentry where the kernel allows it), and by kprobe/kretprobe,
# funclatency's own mechanism
LATENCY_FUNCTION_AUDTRACE = {
    "audtrace-function": [],
    "audtrace-function-kprobe": ["--function-via", "kprobe"],
}


def _tracing_line(tr: harness.Audtrace) -> str:
    return next((ln for ln in tr.stderr if ln.startswith("audtrace: tracing")), "")


@contextlib.contextmanager
def latency_condition(name: str, work: Path, seen: dict[str, str]) -> Iterator[None]:
    """One condition of the latency parts; `seen` keeps audtrace's tracing line per
    condition (it names the mechanism)."""
    fn = LATENCY_FUNCTION.get(platform.machine(), "")
    if name == "none":
        yield
    elif name in LATENCY_AUDTRACE:
        args = ["latency", "--syscall", "getppid", *LATENCY_AUDTRACE[name]]
        with harness.audtrace(args, work / "latency.log") as tr:
            seen[name] = _tracing_line(tr)
            yield
    elif name in LATENCY_FUNCTION_AUDTRACE:
        args = ["latency", "--function", fn, *LATENCY_FUNCTION_AUDTRACE[name]]
        with harness.audtrace(args, work / "latency.log") as tr:
            seen[name] = _tracing_line(tr)
            yield
    elif name == "funclatency":  # bcc's: one function's latency histogram
        with harness.tool([FUNCLATENCY, fn], "Tracing"):
            yield
    else:  # bcc's own tool: per-syscall counts and latency, filtered to getppid in-kernel
        with harness.tool([SYSCOUNT, "-L", "--syscall", "getppid"], "Tracing"):
            yield


def _latency_rounds(conds: tuple[str, ...], what: str, loop: Path, work: Path,
                    scale: Scale) -> dict:
    """getppid's CPU ns per call under each condition, interleaved over the rounds."""
    rounds: list[dict[str, float]] = []
    seen: dict[str, str] = {}
    loads: list[list[float]] = []
    from audtrace.tracer.ebpf import system

    # bcc's tools need tracefs and, like audtrace, a header tree presented to BCC
    with system.tracefs_mounted(log), system.header_tree_for_bcc(system.find_header_tree()):
        for i, order in enumerate(plan.schedule(conds, scale.rounds)):
            log(f"{what} round {i + 1}/{scale.rounds}: {' '.join(order)}")
            loads.append(list(os.getloadavg()))
            r = {}
            for cond in order:
                with latency_condition(cond, work, seen):
                    r[cond] = time_calls(loop, "getppid", scale.calls, scale.reps)[1]
                harness.settle()
            rounds.append(r)
    ratio, add = plan.ratios(rounds, "none"), plan.added(rounds, "none")
    return {
        "conditions": list(conds),
        "rounds": rounds,
        "loadavg_per_round": loads,
        "mechanisms": seen,
        "summary": {
            c: {
                "ns": plan.summarize([r[c] for r in rounds]).as_dict(),
                "ratio": plan.summarize(ratio[c]).as_dict(),
                "added_ns": plan.summarize(add[c]).as_dict(),
            }
            for c in conds
        },
    }


def _share(rounds: list[dict[str, float]], ours: str, theirs: str) -> dict | None:
    """Ours' added cost as a share of theirs', per round, summarized (None: theirs added
    nothing measurable in any round)."""
    v = plan.overhead_share(rounds, "none", ours, theirs)
    return plan.summarize(v).as_dict() if v else None


def latency(loop: Path, work: Path, scale: Scale) -> dict:
    """getppid timed by `audtrace latency --syscall getppid` (each mechanism) and by bcc's
    syscount -L; audtrace's added cost as a share of syscount's, per round."""
    if "latency" not in SUBCOMMANDS:
        return {"skipped": "no `audtrace latency` subcommand in this tree"}
    have_bcc = Path(SYSCOUNT).exists()
    conds = LATENCY_CONDITIONS if have_bcc else LATENCY_CONDITIONS[:-1]
    res = _latency_rounds(conds, "latency", loop, work, scale)
    if have_bcc:
        res["share_of_syscount_added"] = {
            c: _share(res["rounds"], c, "syscount") for c in LATENCY_AUDTRACE
        }
    res["note"] = "getppid, the timed call, timed by each tool"
    return res


def latency_function(loop: Path, work: Path, scale: Scale) -> dict:
    """The kernel function getppid runs, timed by `audtrace latency --function` and by bcc's
    funclatency: only where the kernel has kprobes or fentry."""
    from audtrace.tracer.ebpf import features

    fn = LATENCY_FUNCTION.get(platform.machine())
    if fn is None:
        return {"skipped": f"no function known on {platform.machine()}"}
    if not features.kernel_function_exists(fn):
        return {"skipped": f"no kernel function {fn}"}
    # what audtrace picks for this function (fentry needs the function in the kernel's BTF)
    mech, why = features.function_mechanism("auto", fn)
    if mech is None:
        return {"skipped": why}
    conds = ["none", "audtrace-function"]
    # by kprobe too when audtrace picks fentry: the same mechanism as funclatency's
    if mech == "fentry" and features.function_mechanism("kprobe")[0] == "kprobe":
        conds.append("audtrace-function-kprobe")
    have_bcc = Path(FUNCLATENCY).exists()
    if have_bcc:
        conds.append("funclatency")
    with harness.debugfs_mounted() if have_bcc else contextlib.nullcontext():
        res = _latency_rounds(tuple(conds), "latency-function", loop, work, scale)
    res["function"], res["via"], res["via_why"] = fn, mech, why
    if have_bcc:
        # the target is on what audtrace picks; the kprobe figure is in the table beside it
        res["share_of_funclatency_added"] = _share(res["rounds"], "audtrace-function",
                                                   "funclatency")
        res["share_of_funclatency_added_by"] = {
            c: _share(res["rounds"], c, "funclatency")
            for c in conds if c in LATENCY_FUNCTION_AUDTRACE
        }
    return res


AUDIT_COST_RULE = "-a always,exit -F arch=b64 -S getppid -F key=bench-cost"
AUDIT_COST_WINDOW = 0.3
AUDIT_COST_NOTE = ("in the kernel: time from sys_enter to sys_exit, waits for audit's backlog"
                   " included (the p99); the loop: CPU time of the caller, without them")


def audit_cost(loop: Path, work: Path, scale: Scale) -> dict:
    """One rule on getppid: audtrace's --audit-cost figures (timed in the kernel, with and
    without the rule in turns), and the same rule's cost to the calling loop measured from
    outside (CPU ns per call with and without it, interleaved), in one run, auditd logging."""
    if "latency" not in SUBCOMMANDS:
        return {"skipped": "no `audtrace latency` subcommand in this tree"}
    rounds = 2 * scale.rounds
    loads = [list(os.getloadavg())]
    with harness.auditd(work):
        run = subprocess.run(
            [str(harness.AUDTRACE), "latency", "--audit-cost", AUDIT_COST_RULE, "--syscall",
             "getppid", "--load", "--rounds", str(rounds), "--window", str(AUDIT_COST_WINDOW),
             "--format", "json"],
            capture_output=True, text=True, timeout=300, cwd=harness.REPO,
        )
        if run.returncode != 0:
            raise RuntimeError(f"audtrace latency --audit-cost failed: {run.stderr[-500:]}")
        (entry,) = json.loads(run.stdout.splitlines()[-1])["entries"]
        harness.settle()
        outside: list[dict[str, float]] = []
        for i, order in enumerate(plan.schedule(("none", "rule"), rounds)):
            log(f"audit-cost round {i + 1}/{rounds}: {' '.join(order)}")
            loads.append(list(os.getloadavg()))
            r = {}
            for cond in order:
                # every call under the rule is a record: the matched calls' count keeps
                # auditd's log small
                with (harness.audit_rules([AUDIT_COST_RULE]) if cond == "rule"
                      else contextlib.nullcontext()):
                    r[cond] = time_calls(loop, "getppid", scale.match_calls, scale.reps)[1]
                harness.settle()
            outside.append(r)
    added = plan.added(outside, "none")["rule"]
    return {
        "rule": AUDIT_COST_RULE,
        "loadavg": loads,
        "audtrace": {
            "added_ns": entry["added_ns"],
            "rounds_added_mean_ns": entry["rounds_added_mean_ns"],
            "calls_with": entry["with"]["count"],
            "calls_without": entry["without"]["count"],
            "tracing": next((ln for ln in run.stderr.splitlines()
                             if ln.startswith("audtrace: tracing")), ""),
        },
        "loop": {"rounds": outside, "added_ns": plan.summarize(added).as_dict()},
        "note": AUDIT_COST_NOTE,
    }


# ---- the report ------------------------------------------------------------------------------


def report(res: dict) -> str:
    parts = []
    if "overhead" in res:
        o = res["overhead"]["summary"]
        rows = []
        for c in CONDITIONS:
            row: list[object] = [c]
            for m in MODES:
                row += [o[m][c]["ns"]["median"], o[m][c]["ratio"]["median"]]
            rows.append(row)
        head = ["condition"] + [h for m in MODES for h in (f"{m} ns", "ratio")]
        parts.append(
            "Per-syscall cost, CPU ns per call (median of rounds; ratio to `none` of the same "
            "round)\n" + plan.table(head, rows)
        )
    if "throughput" in res:
        t = res["throughput"]
        rows = []
        for name in TRACERS:
            steps = t["steps"][name]
            s = t["summary"][name]
            cpu = [
                st["cpu_seconds"]["tracer"] * 1e6 / st["recorded"] for st in steps if st["recorded"]
            ]
            above = s["above"][0] if s["above"] else None
            rows.append(
                [
                    name,
                    s["no_loss_rate"],
                    f"{above['rate']}: sent at {above['achieved']:.0f}/s, missing "
                    f"{above['missing']}, counted {above['reported_lost']}"
                    if above
                    else "none failed",
                    plan.median(cpu) if cpu else None,
                ]
            )
        parts.append(
            "Signal storm (highest rate kept with nothing lost, first rate above it)\n"
            + plan.table(["tracer", "no-loss /s", "above", "tracer CPU us/event"], rows)
        )
    if "events" in res:
        us = res["events"]["us_per_event"]
        parts.append(
            f"Python CPU per event, user space alone ({res['events']['events']} kill events"
            f" from {res['events']['senders']} senders seen before)\n"
            + plan.table(["format", "us/event"], [[f, v] for f, v in us.items()])
        )
    if "burst" in res:
        b = res["burst"]
        rows = [
            [t, b[t]["sent"], b[t]["recorded"], b[t]["kept_share"], b[t]["achieved"],
             b[t]["reported_lost"]]
            for t in TRACERS if t in b
        ]
        parts.append(
            f"Burst: one sender, kill() back to back for {b['seconds']} s\n"
            + plan.table(["tracer", "sent", "kept", "share", "sender /s", "counted lost"], rows)
        )
    if "startup" in res:
        rows = []
        for label, runs in res["startup"]["runs"].items():
            ok = [r for r in runs if "error" not in r]
            rows.append(
                [
                    label,
                    plan.median([r["startup_s"] for r in ok]) if ok else None,
                    max(r["peak_rss_mib"] for r in ok) if ok else None,
                    runs[-1].get("error", ""),
                ]
            )
        steps = res["startup"]["kill_parts"]["steps"]
        parts.append(
            "Start-up (seconds to `audtrace: tracing`, peak RSS MiB)\n"
            + plan.table(["command", "seconds", "peak RSS", "error"], rows)
            + "\n  kill start-up by step (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
        )
    if "hooks" in res and "summary" in res["hooks"]:
        h = res["hooks"]
        rows = [[c, *(h["summary"][m][c]["added_ns"]["median"] for m in h["modes"]),
                 *((h["share_of_audit_added"][m].get(c) or {}).get("median")
                   for m in h["modes"])]
                for c in h["conditions"][1:]]
        load = ", ".join(f"{x:.2f}" for x in h["loadavg"])
        parts.append(
            f"Syscall hooks by request size (CPU ns added; x audit's added), load {load}\n"
            + plan.table(["condition", *(f"{m} +ns" for m in h["modes"]),
                          *(f"{m} x audit" for m in h["modes"])], rows)
            + "".join(f"\n  {c}: {ln}" for c, ln in h["tracing_lines"].items()))
    for key, title in (("latency", "Latency subcommand: getppid timed"),
                       ("latency_function", "Latency --function: getppid's kernel function")):
        if key not in res:
            continue
        lat = res[key]
        if "summary" not in lat:
            parts.append(f"{title}: " + str(lat.get("skipped") or lat.get("error")))
            continue
        shares = lat.get("share_of_syscount_added") or {}
        if "share_of_funclatency_added" in lat:
            shares = lat.get("share_of_funclatency_added_by") or {
                "audtrace-function": lat["share_of_funclatency_added"]}
        rows = [
            [
                c,
                lat["summary"][c]["ns"]["median"],
                lat["summary"][c]["ratio"]["median"],
                lat["summary"][c]["added_ns"]["median"],
                shares[c]["median"] if shares.get(c) else "",
            ]
            for c in lat["conditions"]
        ]
        loads = lat["loadavg_per_round"]
        parts.append(
            f"{title} (CPU ns per call; load average {loads[0][0]:.2f} .. {loads[-1][0]:.2f})\n"
            + plan.table(["condition", "getppid ns", "ratio", "added ns",
                          "added / bcc tool's added"], rows)
            + "".join(f"\n  {c}: {line.removeprefix('audtrace: ')}"
                      for c, line in lat["mechanisms"].items())
        )
    if "audit_cost" in res:
        ac = res["audit_cost"]
        if "audtrace" in ac:
            a, lp = ac["audtrace"], ac["loop"]["added_ns"]
            spread = a["rounds_added_mean_ns"]
            parts.append(
                f"Audit cost of `{ac['rule']}` to getppid (load average"
                f" {ac['loadavg'][0][0]:.2f} .. {ac['loadavg'][-1][0]:.2f}; auditd logging)\n"
                + plan.table(
                    ["measured by", "added mean ns", "p50", "p99", "rounds"],
                    [["audtrace latency --audit-cost (in the kernel)", a["added_ns"]["mean"],
                      a["added_ns"]["p50"], a["added_ns"]["p99"],
                      f"{min(spread)} .. {max(spread)}" if spread else ""],
                     ["the C loop's CPU time", lp["median"], "", "",
                      f"{lp['min']:.0f} .. {lp['max']:.0f}"]],
                )
                + f"\n  ({ac['note']})"
            )
        else:
            parts.append("Audit cost: " + str(ac.get("skipped") or ac.get("error")))
    if "targets" in res:
        parts.append(
            "Targets\n"
            + plan.table(
                ["target", "measured", "met"],
                [[t["target"], t["measured"], t["met"]] for t in res["targets"]],
            )
        )
    return "\n\n".join(parts)


def targets(res: dict) -> list[dict]:
    out = []

    def add(target: str, value: float | None, ok: bool | None) -> None:
        out.append({"target": target, "measured": value, "met": ok})

    if "overhead" in res:
        share = res["overhead"]["audtrace_share_of_auditd_added"]
        g = share["getppid"]["median"] if share["getppid"] else None
        add("getppid: audtrace adds <= 0.5 x audit's", g, None if g is None else g <= 0.5)
        s = res["overhead"]["summary"]["kill0"]
        a, b = s["audtrace"]["ratio"]["median"], s["auditd"]["ratio"]["median"]
        add("kill(pid,0), unmatched: audtrace ratio < auditd's", a / b, a < b)
        s = res["overhead"]["summary"]["killsig"]
        a, b = s["audtrace"]["ratio"]["median"], s["auditd"]["ratio"]["median"]
        add("kill, matched: audtrace ratio < auditd's", a / b, a < b)
    if "hooks" in res and "share_of_audit_added" in res["hooks"]:
        sh = res["hooks"]["share_of_audit_added"]
        for req in HOOK_REQUESTS:
            g, k = sh["getppid"][f"{req}-auto"], sh["kill0"][f"{req}-auto"]
            g = g["median"] if g else None
            k = k["median"] if k else None
            add(f"{req} (hooks as chosen), untraced: adds <= 0.5 x audit's", g,
                None if g is None else g <= 0.5)
            add(f"{req} (hooks as chosen), traced unmatched: adds < audit's", k,
                None if k is None else k < 1)
    if "events" in res:
        us = res["events"]["us_per_event"]
        add("Python CPU per event, raw: <= 8 us", us["raw"], us["raw"] <= 8)
        add("Python CPU per event, json: <= 12 us", us["json"], us["json"] <= 12)
    if "burst" in res:
        for fmt in ("raw", "json"):
            share = res["burst"].get(f"audtrace-{fmt}", {}).get("kept_share")
            add(f"burst, {fmt}: >= 98% kept", share, None if share is None else share >= 0.98)
    if "throughput" in res:
        sm = res["throughput"]["summary"]
        for fmt in ("raw", "json"):
            for rate in (20_000, 50_000):
                step = next((s for s in res["throughput"]["steps"][f"audtrace-{fmt}"]
                             if s["rate"] == rate), None)
                if step is not None:
                    add(f"storm {rate}/s, {fmt}: every event kept", step["missing"],
                        step["missing"] == 0 and step["kept_up"])
        theirs = sm["auditd"]["no_loss_rate"]
        for fmt in ("raw", "json"):
            ours = sm[f"audtrace-{fmt}"]["no_loss_rate"]
            add(
                f"no-loss rate, {fmt}: >= 2 x auditd's",
                ours / theirs if theirs else None,
                ours >= 2 * theirs if theirs else None,
            )
    # the target is on what audtrace picks itself; the others are in the latency table
    s = res.get("latency", {}).get("share_of_syscount_added", {}).get("audtrace-latency")
    if s:
        m = s["median"]
        add("latency: audtrace adds <= 0.8 x syscount's", m, m <= 0.8)
    s = res.get("latency_function", {}).get("share_of_funclatency_added")
    if s:
        m = s["median"]
        add("latency --function: adds <= funclatency's", m, None if m is None else m <= 1.0)
    if "startup" in res:
        for label, runs in res["startup"]["runs"].items():
            ok = [r for r in runs if "error" not in r]
            if ok:
                sec = plan.median([r["startup_s"] for r in ok])
                rss = max(r["peak_rss_mib"] for r in ok)
                add(f"{label}: start-up < 1.5 s", sec, sec < 1.5)
                add(f"{label}: peak RSS < 120 MiB", rss, rss < 120)
    return out


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, not {text!r}")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/bench/run", description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="one quick pass (CI): proves it works")
    ap.add_argument("--json", default="audtrace-bench.json", help="raw numbers (JSON)")
    ap.add_argument(
        "--only",
        action="append",
        choices=("overhead", "hooks", "throughput", "events", "burst", "startup", "latency",
                 "latency-function", "audit-cost"),
        help="run only these parts",
    )
    for opt, what in (("--rounds", "rounds of interleaved conditions"),
                      ("--calls", "calls per timed block"),
                      ("--reps", "timed blocks per measurement (the median is kept)")):
        ap.add_argument(opt, type=_positive, metavar="N", help=f"{what} (overrides the scale)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root (BPF, kernel audit, auditd)")
    scale = SHORT if args.short else FULL
    scale = dataclasses.replace(scale, **{k: v for k in ("rounds", "calls", "reps")
                                          if (v := getattr(args, k)) is not None})
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` puts kernel audit back (SIGINT
    # too: a shell starting us in the background would have left it ignored)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    parts = args.only or ["overhead", "hooks", "throughput", "events", "burst", "startup",
                          "latency", "latency-function", "audit-cost"]
    res: dict = {
        "meta": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "short": args.short,
            "scale": asdict(scale),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg_before": os.getloadavg(),
        }
    }
    t0 = time.monotonic()
    steps = {"overhead": overhead, "hooks": hooks, "throughput": throughput, "events": events_cpu,
             "burst": burst, "startup": startup, "latency": latency,
             "latency-function": latency_function, "audit-cost": audit_cost}
    with tempfile.TemporaryDirectory(prefix="audtrace-bench.") as tmp:
        work = Path(tmp)
        loop = harness.build_loop(work)
        for name in parts:
            fn = steps[name]
            try:
                res[name.replace("-", "_")] = fn(loop, work, scale)
            except Exception as e:  # one broken part must not cost the others' numbers
                log(f"{name} failed: {type(e).__name__}: {e}")
                res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
            # written after every part: a long run interrupted keeps what it measured
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    res["targets"] = targets(res)
    res["meta"]["seconds"] = time.monotonic() - t0
    res["meta"]["loadavg_after"] = os.getloadavg()
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(report(res))
    print(f"\nraw numbers: {args.json}")
    return 1 if "errors" in res else 0


if __name__ == "__main__":
    sys.exit(main())
