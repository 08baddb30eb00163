"""One tracing run: set up the sources, stream events to the sink, put everything back.

Everything set up goes on one ExitStack, so tracefs, the header tree, BPF programs, audit
rules and the audit enabled flag are restored on every exit path: normal end, --count,
--duration, SIGINT/SIGTERM/SIGHUP, and errors.
"""

from __future__ import annotations

import contextlib
import gc
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.compat.rules import Rule
from audtrace.tracer import records as audit_records
from audtrace.tracer import serials
from audtrace.tracer.audit.match import relay_filter
from audtrace.tracer.ebpf import probes, system
from audtrace.tracer.ebpf.events import Clock, Decoder
from audtrace.tracer.log_policy import Policy
from audtrace.tracer.sink import Sink
from audtrace.tracer.stream import Stream

CAP_SYS_ADMIN, CAP_AUDIT_CONTROL, CAP_AUDIT_READ, CAP_PERFMON, CAP_BPF = 21, 30, 37, 38, 39
CAP_NAMES = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_AUDIT_CONTROL: "CAP_AUDIT_CONTROL",
             CAP_AUDIT_READ: "CAP_AUDIT_READ", CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


class SessionError(Exception):
    pass


def settle_memory() -> None:
    """Once set up: what exists now (BCC, LLVM's Python side, tables) lives until the end,
    so the collector stops scanning it, and collects the young generation less often. The
    event path makes no cycles; each event's objects go by reference counting."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def notice(msg: str) -> None:
    print(f"audtrace: {msg}", file=sys.stderr, flush=True)


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_caps(source: str) -> list[str]:
    caps = effective_caps()
    need = []
    # CAP_SYS_ADMIN stands in for CAP_BPF+CAP_PERFMON on kernels older than 5.8
    if source in ("ebpf", "both") and not caps & (1 << CAP_SYS_ADMIN):
        need += [c for c in (CAP_BPF, CAP_PERFMON) if not caps & (1 << c)]
    if source in ("audit", "both"):
        need += [c for c in (CAP_AUDIT_CONTROL, CAP_AUDIT_READ) if not caps & (1 << c)]
    return [CAP_NAMES[c] for c in need]


@dataclass
class Subcommand:
    """What a subcommand declares; the session does the rest."""
    name: str
    program: probes.ProgramSpec | None = None   # None: kernel audit alone (`watch`)
    decode: Callable | None = None      # (ebpf.events.Decoder, event bytes) -> normalized event
    # (normalized event, keys, serial) -> Event, or a list of Events; the session replaces
    # the serial with its next one as the event is written, so serials rise with the log
    to_audit: Callable | None = None
    audit_rules: list[Rule] = field(default_factory=list)
    # the request's filters that kernel audit rules cannot express (--comm, --target-pid...),
    # applied to the relayed audit events: (Event) -> keep
    audit_filter: Callable | None = None
    # kernel record types relayed although no rule selects them (`exit`: ANOM_ABEND)
    relay_types: tuple[str, ...] = ()
    # an audit rule the kernel refused (Rule, AuditError): True to load the rest
    # (auditctl -i/-c), False to stop
    audit_refused: Callable | None = None
    # called after every poll with (program, final); final once, before the programs go:
    # for subcommands that aggregate in BPF maps and report from them
    tick: Callable[[probes.Program, bool], None] | None = None
    mechanism: str = "eBPF"
    # kernel audit runs for audit_rules whatever --source says (rules eBPF cannot express)
    audit_always: bool = False
    # called once every source is live (`audtrace trace` lets its command run then)
    started: Callable[[], None] | None = None
    # polled every loop: an int ends the run with that exit status (the traced command's)
    finished: Callable[[], int | None] | None = None


@dataclass
class Options:
    source: str = "ebpf"
    fmt: str = "raw"
    output: str | None = None
    keys: list[str] = field(default_factory=list)
    duration: float | None = None
    count: int | None = None
    buffer_bytes: int = probes.DEFAULT_BUFFER     # eBPF event buffer, all CPUs
    log: Policy | None = None                     # -o's disk-full, disk-error, rotation


class Session:
    def __init__(self, sub: Subcommand, opts: Options,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.sub, self.opts = sub, opts
        self.on_event = on_event        # sees every event written (audtrace compare)
        self.final_lost: dict[str, int] | None = None
        self.stop = False
        self.exit_status = 0
        self.stream = Stream(serials.Serials())     # this run's slot, taken now: fails early
        self.written = {"ebpf": 0, "audit": 0}
        self.counted = 0                # toward --count: traced events, not bookkeeping
        self.log_lost = 0               # events the log could not take (disk full...)
        self.lost_reported = {"ebpf": 0, "audit": 0, "log": 0}
        self.sink: Sink | None = None
        self.program: probes.Program | None = None
        self.audit = None
        self.refused: list = []         # audit rules the kernel refused, the run going on
        self.clock: Clock | None = None

    # -- set-up -------------------------------------------------------------------------
    def _start_ebpf(self, stack: contextlib.ExitStack) -> None:
        root = stack.enter_context(system.tracefs_mounted(notice))
        tree = system.find_header_tree()
        if tree.kind == "none":
            raise SessionError(tree.note + ": install the kernel headers (./audtrace does)")
        if tree.kind == "foreign":
            notice(tree.note)
        stack.enter_context(system.header_tree_for_bcc(tree))
        layout = probes.load_layout()
        if layout.source == "headers":
            notice("no BTF: struct offsets come from the header tree, right only if it is the"
                   " running kernel's")
        self.program = probes.Program(self.sub.program, layout, root, self.opts.buffer_bytes)
        stack.callback(self.program.close)
        if self.program.missing:
            notice("no tracepoint on this kernel for: " + ", ".join(self.program.missing))
        self.clock = Clock()
        self.decoder = Decoder(self.program.src, tables.host_arch(), self.clock)
        self.program.open_events()

    def _start_audit(self, stack: contextlib.ExitStack) -> None:
        from audtrace.tracer.audit.source import AuditSource

        def on_refused(rule, err) -> bool:
            ok = self.sub.audit_refused is not None and self.sub.audit_refused(rule, err)
            if ok:
                self.refused.append(rule)
            return ok

        # the session's own handlers already turn SIGINT/SIGTERM/SIGHUP into a clean stop
        self.audit = stack.enter_context(AuditSource(self.sub.audit_rules, on_notice=notice,
                                                     handle_signals=False,
                                                     on_refused=on_refused))
        # a rule the kernel refused matches nothing: it selects no events to relay
        self.relay = relay_filter([r for r in self.sub.audit_rules if r not in self.refused],
                                  self.sub.audit_filter, self.sub.relay_types)

    # -- the stream -----------------------------------------------------------------------
    def _take_ebpf(self) -> None:
        """Decode what the program sent since the last poll, in one go."""
        batch = self.program.take()
        if not batch:
            return
        decode, to_audit, keys, d = self.sub.decode, self.sub.to_audit, self.opts.keys, self.decoder
        out: list[tuple[Event, int]] = []
        add = out.append
        for buf in batch:
            ev = decode(d, buf)
            made = to_audit(ev, keys, 0)
            # with the program's own stamp: it orders events of one millisecond exactly
            if type(made) is list:
                for one in made:
                    add((one, ev.mono_ns))
            else:
                add((made, ev.mono_ns))
        self.stream.add_many(out, time.monotonic_ns())

    def _queue(self, ev: Event, mono: int = 0) -> None:
        self.stream.add(ev, mono)

    def _drain(self, sink: Sink, everything: bool = False) -> None:
        count = self.opts.count
        out: list[Event] = []
        for ev in self.stream.ready(everything=everything):
            if count is not None and self.counted >= count:
                self.stream.clear()
                break
            out.append(ev)
            self.written[ev.source] += 1
            if not any(r.type in UNCOUNTED for r in ev.records):
                self.counted += 1
        if out:
            n = sink.write_many(out)
            if n < len(out):
                self._not_written(out[n:])
            if sink.stopped:
                self.stop = True
            if self.on_event is not None:
                for ev in out:
                    self.on_event(ev)
        if count is not None and self.counted >= count:
            self.stop = True

    def _not_written(self, events: list[Event]) -> None:
        """Events the log could not take are lost, counted as the log's. A loss record among
        them is not: its losses count as unreported again, so a later record tells them."""
        for ev in events:
            self.written[ev.source] -= 1
            rec = ev.records[0]
            if ev.source == "ebpf" and rec.type == LOSS_TYPE and rec.get("op") == LOSS_OP:
                source = (rec.get("source") or "").strip('"')
                self.lost_reported[source] -= int((rec.get("lost") or "0").strip('"'))
            else:
                self.log_lost += 1

    def lost(self) -> dict[str, int]:
        out = {"ebpf": 0, "audit": 0, "log": self.log_lost}
        if self.program is not None:
            out["ebpf"] = self.program.lost()
        if self.audit is not None:
            out["audit"] = self.audit.lost().total
        return out

    def _report_loss(self) -> None:
        """Lost events become an event of their own in the stream, never a silent gap."""
        for source, n in self.lost().items():
            new = n - self.lost_reported[source]
            if new <= 0:
                continue
            self.lost_reported[source] = n
            self._queue(audit_records.loss_event(source, new, n, time.time_ns()))

    def _handle_signal(self, _signum, _frame) -> None:
        self.stop = True

    def run(self) -> int:
        opts = self.opts
        if opts.source not in ("ebpf", "audit", "both"):
            raise SessionError(f"unknown source {opts.source!r}: choose ebpf, audit or both")
        missing = missing_caps(opts.source)
        if missing:
            raise SessionError("needs " + ", ".join(missing) + " (run as root)")
        sink = self.sink = Sink(opts.output, opts.fmt, opts.log, notice)
        old = {s: signal.signal(s, self._handle_signal)
               for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        if sink.log is not None:
            # as `auditd resume`: a log suspended by its disk-full or disk-error action
            old[signal.SIGUSR2] = signal.signal(signal.SIGUSR2,
                                                lambda *_: sink.request_resume())
        try:
            with contextlib.ExitStack() as stack:
                stack.callback(self.stream.serials.close)
                stack.callback(sink.close)
                if opts.source in ("ebpf", "both"):
                    self._start_ebpf(stack)
                if opts.source in ("audit", "both") or (self.sub.audit_always
                                                        and self.sub.audit_rules):
                    self._start_audit(stack)
                settle_memory()
                notice(f"tracing {self.sub.name} ({self.describe()}); Ctrl-C to stop")
                if self.sub.started is not None:
                    self.sub.started()
                self._loop(sink)
                self._report_loss()
                self._drain(sink, everything=True)
                self._summary()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if sink.stopped:
            raise SessionError(sink.stopped)
        return self.exit_status

    def _loop(self, sink: Sink) -> None:
        deadline = None if self.opts.duration is None else time.monotonic() + self.opts.duration
        last_loss_check = 0.0
        while not self.stop:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.sub.finished is not None:
                status = self.sub.finished()
                if status is not None:
                    self.exit_status = status
                    break
            if self.program is not None:
                self.clock.sample()
                self.program.poll(probes.POLL_MS)
                self._take_ebpf()
                if self.sub.tick is not None:
                    self.sub.tick(self.program, False)
            if self.audit is not None:
                if self.program is None:
                    select.select([self.audit], [], [], 0.05)
                for ev in self.audit.read_events():
                    if self.relay(ev):
                        self._queue(ev)
            if time.monotonic() - last_loss_check > 1.0:
                last_loss_check = time.monotonic()
                self._report_loss()
            self._drain(sink)
        if self.program is not None:
            self.program.poll(0)
            self._take_ebpf()
            if self.sub.tick is not None:
                self.sub.tick(self.program, True)
                self.program.poll(0)
                self._take_ebpf()
        if self.audit is not None:
            for ev in self.audit.read_events() + self.audit.flush():
                if self.relay(ev):
                    self._queue(ev)

    def describe(self) -> str:
        parts = [f"source {self.opts.source}"]
        if self.program is not None:
            layout = self.program.layout
            hooked = self.program.hooked()
            parts.append(f"{self.sub.mechanism}, {hooked + ', ' if hooked else ''}offsets from "
                         f"{probes.mechanism(layout)}, {self.program.output()}")
        if self.audit is not None:
            parts.append(f"kernel audit, {len(self.sub.audit_rules) - len(self.refused)} rules")
        return "; ".join(parts)

    def _summary(self) -> None:
        lost = self.final_lost = self.lost()
        log = f", log {lost['log']}" if self.sink is not None and self.sink.log else ""
        notice(f"{sum(self.written.values())} events (ebpf {self.written['ebpf']}, audit "
               f"{self.written['audit']}); lost: ebpf {lost['ebpf']}, audit {lost['audit']}"
               + log)


LOSS_TYPE = audit_records.LOSS_TYPE
LOSS_OP = '"lost-events"'
# written but not counted toward --count: audit's record of audtrace's own rule changes
# (otherwise `--count 1 --source audit` stops before anything is traced), and loss records
UNCOUNTED = {"CONFIG_CHANGE", LOSS_TYPE}
