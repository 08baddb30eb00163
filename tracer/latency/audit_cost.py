"""`audtrace latency --audit-cost RULE...`: what kernel audit rules add to each timed call.

The latency program runs throughout; the rules go in and out of the kernel in windows, with
and without them in turns (ABBA over the rounds), and each window's histograms are drained
at its end. The rules are loaded through tracer/audit/source.py (AuditSource, without its
record reader): every change is journaled before it is made, audit is enabled for the rules
when it was off, and the rules and the flag are put back after each window with them, on
every exit path (a run killed with SIGKILL: by the next run, or `audtrace cleanup`).
The figures are compared in tracer/latency/comparison.py.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import orjson
from audtrace.compat import tables
from audtrace.compat.rules import Rule
from audtrace.tracer.latency import comparison, load
from audtrace.tracer.latency.histogram import NOTE
from audtrace.tracer.latency.report import Counters

WARMUP_S = 0.3          # under the rules, before the first window: the load gets going
LOAD_CALLS = load.NAMES


@dataclass(frozen=True)
class Plan:
    rules: list[Rule]
    rounds: int = 5
    window: float = 1.0
    load: bool = False      # audtrace's own loop makes the calls (and alone is timed)


def schedule(rounds: int) -> list[tuple[int, bool]]:
    """(round, with the rules) per window: with-without, then without-with, ... (ABBA), so a
    drift over the run falls on both conditions alike."""
    out = []
    for r in range(rounds):
        first = r % 2 == 0
        out += [(r, first), (r, not first)]
    return out


class AuditCost:
    """The tick of the run: ends each window, switches the rules, reports at the end.
    `finished` tells the session when the last window is done."""

    def __init__(self, req, plan: Plan, out: TextIO) -> None:
        self.req, self.plan, self.out = req, plan, out  # req: subcommands.latency's request
        self.counters = Counters(req.timed(), req.mechanism.arrays)
        self.steps = schedule(plan.rounds)
        self.windows: list[comparison.Window] = []
        self.step = -1                  # the warm-up
        self.since: float | None = None  # monotonic start of the current window
        self.wall0 = self.wall1 = 0.0
        self.source = None              # AuditSource while the rules are in
        self.loader: subprocess.Popen | None = None
        self.done = False
        self.said: set[str] = set()

    def describe(self) -> str:
        n = len(self.plan.rules)
        w = f"{self.plan.window:g}s"
        load = ", audtrace's own load" if self.plan.load else ""
        rounds = self.plan.rounds
        return (f"audit cost of {n} rule{'s' if n != 1 else ''}: {rounds}"
                f" round{'s' if rounds != 1 else ''} of {w} with and {w} without{load}")

    def finished(self) -> int | None:
        return 0 if self.done else None

    def __call__(self, program, final: bool) -> None:
        if final:
            self.close()
            self.report()
            return
        if self.done:
            return
        now = time.monotonic()
        if self.since is None:
            atexit.register(self.close)
            self.wall0 = time.time()
            self._rules(True)
            if self.plan.load:      # forked once audit is on: it has an audit context
                self._start_load(program.bpf)
            self.since = now
            return
        if now - self.since < (WARMUP_S if self.step < 0 else self.plan.window):
            return
        got = self.counters.take(program.bpf)
        if self.step >= 0:
            r, with_rules = self.steps[self.step]
            self.windows.append(comparison.Window(r, with_rules, now - self.since,
                                                  {nr: h for (nr, _t), h in got.items()}))
        self.step += 1
        if self.step == len(self.steps):
            self.close()
            self.done = True
            return
        want = self.steps[self.step][1]
        if want != (self.source is not None):
            self._rules(want)
            self.counters.take(program.bpf)    # calls across the change belong to neither
        self.since = time.monotonic()

    # ---- the rules in and out, the load -----------------------------------------------
    def _notice(self, msg: str) -> None:
        if msg not in self.said:    # the same words at every window with the rules: once
            self.said.add(msg)
            print(f"audtrace: {msg}", file=sys.stderr, flush=True)

    def _rules(self, on: bool) -> None:
        from audtrace.tracer.audit.source import AuditSource

        if on:
            src = AuditSource(self.plan.rules, on_notice=self._notice, handle_signals=False,
                              records=False)
            src.open()
            self.source = src
        elif self.source is not None:
            src, self.source = self.source, None
            src.close()

    def _start_load(self, bpf) -> None:
        self.loader = subprocess.Popen(
            [sys.executable, "-m", "audtrace.tracer.latency.load", str(os.getpid()),
             *self.req.syscalls], stdin=subprocess.DEVNULL, cwd="/")
        bpf["filter_pid"][ctypes.c_uint32(self.loader.pid)] = ctypes.c_uint8(1)

    def close(self) -> None:
        """The rules out and the load stopped: idempotent, for every exit path."""
        self._rules(False)
        if self.loader is not None and self.loader.poll() is None:
            self.loader.kill()
            self.loader.wait()
        if not self.wall1:
            self.wall1 = time.time()

    # ---- the report ----------------------------------------------------------------------
    def report(self) -> None:
        arch = tables.host_arch()
        timed = {nr: tables.syscall_name(arch, nr) or f"syscall {nr}"
                 for nr in self.req.timed()}
        entries = comparison.compare(self.windows, timed, self.plan.rules, arch)
        rounds = len({w.round for w in self.windows})
        stopped = "" if self.done else (f" (stopped after {len(self.windows)} of"
                                        f" {len(self.steps)} windows)")
        rules = [str(r) for r in self.plan.rules]
        if self.req.json:
            obj = {"type": "latency", "report": "audit-cost", "start": round(self.wall0, 3),
                   "end": round(self.wall1, 3), "unit": "ns", "rules": rules,
                   "rounds": self.plan.rounds, "windows_done": len(self.windows),
                   "window_s": self.plan.window, "load": self.plan.load,
                   "method": comparison.METHOD, "noise": comparison.NOISE, "note": NOTE,
                   "entries": [e.to_json() for e in entries]}
            self.out.write(orjson.dumps(obj).decode() + "\n")
        else:
            span = (f"{time.strftime('%H:%M:%S', time.localtime(self.wall0))} .. "
                    f"{time.strftime('%H:%M:%S', time.localtime(self.wall1))}")
            head = [f"== latency audit cost, {span}: {rounds} rounds of {self.plan.window:g}s"
                    f" with the rules and {self.plan.window:g}s without{stopped}",
                    "   rules:", *(f"     {r}" for r in rules)]
            self.out.write(comparison.text(entries, head))
        self.out.flush()
