"""One tracing run: set up the sources, stream events to the sink, put everything back.

A run holds one part per subcommand it runs: the command line runs one, the daemon
(tracer/daemon/) several at once. Every part's BPF program is read into the one stream, the
kernel audit rules of all parts go to one audit source, and everything ends in one sink.

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


@dataclass(eq=False)
class Part:
    """One subcommand of a run: its declaration, the keys its records carry, the source it
    runs on, and once started its program and the decoder of that program's events."""
    sub: Subcommand
    keys: list[str] = field(default_factory=list)
    source: str = "ebpf"
    buffer_bytes: int | None = None     # its eBPF buffer; None: the run's (Options)
    program: probes.Program | None = None
    decoder: Decoder | None = None
    # while a reload hands events over between programs (tracer/daemon/handoff.py): `tap`
    # sees each raw batch of an outgoing program, `screen` filters an incoming one's
    tap: Callable[[list[bytes]], None] | None = None
    screen: Callable[[list[bytes]], list[bytes]] | None = None

    @property
    def runs_ebpf(self) -> bool:
        return self.source in ("ebpf", "both") and self.sub.program is not None

    @property
    def runs_audit(self) -> bool:
        return self.source in ("audit", "both") or (self.sub.audit_always
                                                    and bool(self.sub.audit_rules))


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
    eoe_timeout: float | None = None              # kernel audit's end_of_event_timeout


def combined_source(parts: list[Part]) -> str:
    """The sources the parts run on together, as one --source word."""
    sources = {p.source for p in parts}
    return sources.pop() if len(sources) == 1 else "both"


class Session:
    STOP_HINT = "Ctrl-C to stop"

    def __init__(self, sub: Subcommand | None, opts: Options,
                 on_event: Callable[[Event], None] | None = None,
                 parts: list[Part] | None = None) -> None:
        self.opts = opts
        self.parts = parts if parts is not None else [Part(sub, list(opts.keys), opts.source)]
        self.sub = self.parts[0].sub
        self.on_event = on_event        # sees every event written (audtrace compare)
        self.final_lost: dict[str, int] | None = None
        self.stop = False
        self.exit_status = 0
        self.stream = Stream(serials.Serials())     # this run's slot, taken now: fails early
        self.written = {"ebpf": 0, "audit": 0}
        self.counted = 0                # toward --count: traced events, not bookkeeping
        self.log_lost = 0               # events the log could not take (disk full...)
        self.retired_lost = 0           # eBPF losses of programs a reload has closed
        self.lost_reported = {"ebpf": 0, "audit": 0, "log": 0}
        self.sink: Sink | None = None
        self.stack: contextlib.ExitStack | None = None
        self.tracefs = None             # once eBPF is set up: tracefs root, struct layout
        self.layout = None
        self.audit = None
        self.relay: Callable[[Event], bool] | None = None
        self.refused: list = []         # audit rules the kernel refused, the run going on
        self.clock: Clock | None = None

    # -- set-up -------------------------------------------------------------------------
    def _start_ebpf(self, stack: contextlib.ExitStack) -> None:
        """What every program needs, once per run: tracefs, a header tree, the offsets."""
        self.tracefs = stack.enter_context(system.tracefs_mounted(notice))
        tree = system.find_header_tree()
        if tree.kind == "none":
            raise SessionError(tree.note + ": install the kernel headers (./audtrace does)")
        if tree.kind == "foreign":
            notice(tree.note)
        stack.enter_context(system.header_tree_for_bcc(tree))
        self.layout = probes.load_layout()
        if self.layout.source == "headers":
            notice("no BTF: struct offsets come from the header tree, right only if it is the"
                   " running kernel's")
        self.clock = Clock()
        stack.callback(self._close_programs)

    def make_program(self, part: Part) -> probes.Program:
        """Compile, load and attach a part's program (its events wait in its buffer until
        `add_part`). Touches no state of the run: a reload makes programs on a thread."""
        program = probes.Program(part.sub.program, self.layout, self.tracefs,
                                 part.buffer_bytes or self.opts.buffer_bytes)
        if program.missing:
            notice("no tracepoint on this kernel for: " + ", ".join(program.missing))
        return program

    def add_part(self, part: Part, program: probes.Program | None = None) -> None:
        """A part joins the run (its program made already, or now): its events are read."""
        if part.runs_ebpf:
            part.program = program if program is not None else self.make_program(part)
            part.decoder = Decoder(part.program.src, tables.host_arch(), self.clock)
            part.program.open_events()
        if part not in self.parts:
            self.parts.append(part)

    def retire_part(self, part: Part) -> None:
        """A part leaves the run: its program detached, what it sent read, then closed."""
        if part.program is not None:
            part.program.detach()
            part.program.poll(0)
            self._take_ebpf(part)
            self.retired_lost += part.program.lost()
            part.program.close()
            part.program = None
        self.parts.remove(part)

    def _close_programs(self) -> None:
        for part in self.parts:
            if part.program is not None:
                part.program.close()

    def audit_rules(self, parts: list[Part] | None = None) -> list[Rule]:
        """The kernel audit rules of the parts that run on kernel audit: each rule once, in
        the parts' order."""
        out: list[Rule] = []
        for part in self.parts if parts is None else parts:
            if part.runs_audit:
                out += [r for r in part.sub.audit_rules if r not in out]
        return out

    def _start_audit(self, stack: contextlib.ExitStack) -> None:
        from audtrace.tracer.audit.source import EOE_TIMEOUT, AuditSource

        # the session's own handlers already turn SIGINT/SIGTERM/SIGHUP into a clean stop
        self.audit = AuditSource(self.audit_rules(), on_notice=notice, handle_signals=False,
                                 on_refused=self.on_refused,
                                 eoe_timeout=self.opts.eoe_timeout or EOE_TIMEOUT)
        stack.callback(self.close_audit)
        self.audit.open()
        self.set_relay()

    def close_audit(self) -> None:
        if self.audit is not None:
            self.audit.close()

    def on_refused(self, rule: Rule, err) -> bool:
        """An audit rule the kernel refused: the part it is of says whether to go on."""
        part = next((p for p in self.parts if p.runs_audit and rule in p.sub.audit_rules), None)
        ok = part is not None and part.sub.audit_refused is not None \
            and part.sub.audit_refused(rule, err)
        if ok:
            self.refused.append(rule)
        return bool(ok)

    def set_relay(self, parts: list[Part] | None = None) -> None:
        """Relay what the parts' rules select (a rule the kernel refused selects nothing)."""
        filters = [relay_filter([r for r in p.sub.audit_rules if r not in self.refused],
                                p.sub.audit_filter, p.sub.relay_types)
                   for p in (self.parts if parts is None else parts) if p.runs_audit]
        self.relay = filters[0] if len(filters) == 1 else \
            (lambda ev: any(f(ev) for f in filters))

    # -- the stream -----------------------------------------------------------------------
    def _poll_ebpf(self) -> None:
        """Read what every program sent; wait only when none had anything, on the first."""
        parts = [p for p in self.parts if p.program is not None]
        if not parts:
            return
        self.clock.sample()
        for part in parts:
            part.program.poll(0)
        if not any(part.program.pending for part in parts):
            parts[0].program.poll(probes.POLL_MS)
            for part in parts[1:]:
                part.program.poll(0)
        # screened parts last: the events they are screened against are in by then
        for part in sorted(parts, key=lambda p: p.screen is not None):
            self._take_ebpf(part)
            if part.sub.tick is not None:
                part.sub.tick(part.program, False)

    def _take_ebpf(self, part: Part, batch: list[bytes] | None = None) -> None:
        """Decode what the program sent since the last poll, in one go."""
        batch = part.program.take() if batch is None else batch
        if part.tap is not None:
            part.tap(batch)
        if part.screen is not None:
            batch = part.screen(batch)
        if not batch:
            return
        decode, to_audit, keys, d = part.sub.decode, part.sub.to_audit, part.keys, part.decoder
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
                self.lost_reported[source] = self.lost_reported.get(source, 0) \
                    - int((rec.get("lost") or "0").strip('"'))
            else:
                self.log_lost += 1

    def lost(self) -> dict[str, int]:
        out = {"ebpf": self.retired_lost, "audit": 0, "log": self.log_lost}
        for part in self.parts:
            if part.program is not None:
                out["ebpf"] += part.program.lost()
        if self.audit is not None:
            out["audit"] = self.audit.lost().total
        return out

    def _report_loss(self) -> None:
        """Lost events become an event of their own in the stream, never a silent gap."""
        for source, n in self.lost().items():
            new = n - self.lost_reported.get(source, 0)
            if new <= 0:
                continue
            self.lost_reported[source] = n
            self._queue(audit_records.loss_event(source, new, n, time.time_ns()))

    def _handle_signal(self, _signum, _frame) -> None:
        self.stop = True

    def _signal_handlers(self, sink: Sink) -> dict[int, Callable]:
        handlers: dict[int, Callable] = {s: self._handle_signal
                                         for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        if sink.log is not None:
            # as `auditd resume`: a log suspended by its disk-full or disk-error action
            handlers[signal.SIGUSR2] = lambda *_: sink.request_resume()
        return handlers

    def _open_sink(self) -> Sink:
        return Sink(self.opts.output, self.opts.fmt, self.opts.log, notice)

    def run(self) -> int:
        for part in self.parts:
            if part.source not in ("ebpf", "audit", "both"):
                raise SessionError(f"unknown source {part.source!r}: choose ebpf, audit or both")
        missing = missing_caps(combined_source(self.parts))
        if missing:
            raise SessionError("needs " + ", ".join(missing) + " (run as root)")
        sink = self.sink = self._open_sink()
        old = {s: signal.signal(s, h) for s, h in self._signal_handlers(sink).items()}
        try:
            with contextlib.ExitStack() as stack:
                self.stack = stack
                stack.callback(self.stream.serials.close)
                stack.callback(lambda: self.sink.close())   # the sink a reload left
                if any(p.runs_ebpf for p in self.parts):
                    self._start_ebpf(stack)
                for part in self.parts:
                    self.add_part(part)
                if any(p.runs_audit for p in self.parts):
                    self._start_audit(stack)
                settle_memory()
                self._live()
                self._loop()
                self._report_loss()
                self._drain(self.sink, everything=True)
                self._summary()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if self.sink.stopped:
            raise SessionError(self.sink.stopped)
        return self.exit_status

    def _live(self) -> None:
        """Every source is live."""
        hint = f"; {self.STOP_HINT}" if self.STOP_HINT else ""
        notice(f"tracing {self.names()} ({self.describe()}){hint}")
        for part in self.parts:
            if part.sub.started is not None:
                part.sub.started()

    def _between(self) -> None:
        """Called at every turn of the loop (the daemon's reload, rotation, plugins)."""

    def _loop(self) -> None:
        deadline = None if self.opts.duration is None else time.monotonic() + self.opts.duration
        last_loss_check = 0.0
        while not self.stop:
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._between()
            if self._finished():
                break
            if any(p.program is not None for p in self.parts):
                self._poll_ebpf()
            if self.audit is not None:
                if not any(p.program is not None for p in self.parts):
                    select.select([self.audit], [], [], 0.05)
                for ev in self.audit.read_events():
                    if self.relay(ev):
                        self._queue(ev)
            if time.monotonic() - last_loss_check > 1.0:
                last_loss_check = time.monotonic()
                self._report_loss()
            self._drain(self.sink)
        for part in [p for p in self.parts if p.program is not None]:
            part.program.poll(0)
            self._take_ebpf(part)
            if part.sub.tick is not None:
                part.sub.tick(part.program, True)
                part.program.poll(0)
                self._take_ebpf(part)
        if self.audit is not None:
            for ev in self.audit.read_events() + self.audit.flush():
                if self.relay(ev):
                    self._queue(ev)

    def _finished(self) -> bool:
        """A part that ends the run (`audtrace trace`: its command exited) says so."""
        for part in self.parts:
            if part.sub.finished is not None:
                status = part.sub.finished()
                if status is not None:
                    self.exit_status = status
                    return True
        return False

    def names(self) -> str:
        return ", ".join(p.sub.name for p in self.parts)

    def describe(self) -> str:
        def ebpf(part) -> str:
            hooked = part.program.hooked()
            return f"{part.sub.mechanism}, {hooked + ', ' if hooked else ''}{part.program.output()}"

        if len(self.parts) == 1:
            part = self.parts[0]
            parts = [f"source {part.source}"]
            if part.program is not None:
                hooked = part.program.hooked()
                parts.append(f"{part.sub.mechanism}, {hooked + ', ' if hooked else ''}offsets "
                             f"from {probes.mechanism(self.layout)}, {part.program.output()}")
        else:
            parts = [f"{p.sub.name}: source {p.source}" + (f", {ebpf(p)}" if p.program else "")
                     for p in self.parts]
            if self.layout is not None:
                parts.append(f"offsets from {probes.mechanism(self.layout)}")
        if self.audit is not None:
            parts.append(f"kernel audit, {len(self.audit_rules()) - len(self.refused)} rules")
        return "; ".join(parts)

    def _summary(self) -> None:
        lost = self.final_lost = self.lost()
        log = f", log {lost['log']}" if self.sink is not None and self.sink.log else ""
        notice(f"{sum(self.written.values())} events (ebpf {self.written['ebpf']}, audit "
               f"{self.written['audit']}); lost: ebpf {lost['ebpf']}, audit {lost['audit']}"
               + log + "".join(f", {k} {n}" for k, n in lost.items()
                               if k not in ("ebpf", "audit", "log")))


LOSS_TYPE = audit_records.LOSS_TYPE
LOSS_OP = '"lost-events"'
# written but not counted toward --count: audit's record of audtrace's own rule changes
# (otherwise `--count 1 --source audit` stops before anything is traced), and loss records
UNCOUNTED = {"CONFIG_CHANGE", LOSS_TYPE}
