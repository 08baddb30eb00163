"""SIGHUP: the new configuration in force without a gap, advanced a step at each turn of the
daemon's loop, so the programs in force are read all along.

1. begin: the file is read and every slot declared (a bad file is refused, one line, and
   the configuration in force stays). Slots are matched by key (tracer/daemon/slots.py):
   unchanged ones keep running untouched; the new programs of changed and added slots are
   compiled and attached on a thread (BCC releases the GIL while LLVM works), while the
   loop keeps reading the old ones.
2. attach: the new programs join the run, their events screened against the old ones'
   (handoff.py); new kernel audit rules are added (ruleset.py: an unchanged rule is never
   touched); the log, node name and plugins take their new settings.
3. retire, GRACE seconds later: the old programs are detached, read to the end and closed;
   audit rules no longer wanted are removed.
4. finish, TAIL seconds later: screening ends; READY=1.

Any failure before step 3 undoes what this reload added and keeps the configuration in
force, saying why in one line.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

from audtrace.tracer.daemon import config as config_mod
from audtrace.tracer.daemon import handoff, ruleset, slots
from audtrace.tracer.daemon.config import Config, ConfigError
from audtrace.tracer.session import notice

GRACE = 1.0         # seconds a slot's old and new programs run together
TAIL = 0.5          # seconds the new programs' events are still screened after that


@dataclass(eq=False)
class Swap:
    """A slot whose declaration changed: the old one hands over to the new one."""
    old: slots.Slot
    new: slots.Slot
    handoff: handoff.Handoff | None = None


@dataclass(eq=False)
class Reload:
    cfg: Config
    slots: list[slots.Slot]                 # the new configuration's, kept ones reused
    added: list[slots.Slot] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    removed: list[slots.Slot] = field(default_factory=list)
    programs: dict = field(default_factory=dict)    # Slot -> Program (made on the thread)
    attached_ns: dict = field(default_factory=dict)  # Slot -> monotonic ns, once attached
    error: str | None = None
    thread: threading.Thread | None = None
    stage: str = "making"
    at: float = 0.0                         # when the stage began
    moved: list = field(default_factory=list)
    stranded: int = 0

    @property
    def incoming(self) -> list[slots.Slot]:
        return self.added + [s.new for s in self.swaps]

    @property
    def outgoing(self) -> list[slots.Slot]:
        return [s.old for s in self.swaps] + self.removed


def begin(daemon) -> Reload | None:
    """Read and declare the new configuration; None (the old one stays) when it is bad."""
    try:
        cfg = config_mod.read(daemon.config.path)
        new = slots.declare(cfg)
    except ConfigError as e:
        notice(f"reload refused, the configuration in force stays: {e}")
        daemon.notifier.ready(f"reload refused: {e}")
        return None
    for note in cfg.notes:
        notice(note)
    old = {s.key: s for s in daemon.slots}
    r = Reload(cfg, [])
    for s in new:
        before = old.get(s.key)
        if before is not None and before.fingerprint == s.fingerprint:
            r.slots.append(before)
            continue
        r.slots.append(s)
        if before is None:
            r.added.append(s)
        else:
            r.swaps.append(Swap(before, s))
    keys = {s.key for s in new}
    r.removed = [s for s in daemon.slots if s.key not in keys]
    for slot in r.incoming:
        for note in slot.notes:
            notice(note)
    makes = [s for s in r.incoming if s.part.runs_ebpf]
    if makes and daemon.layout is None:
        daemon._start_ebpf(daemon.stack)    # the first eBPF slot of this run
    for swap in r.swaps:
        if swap.old.part.program is not None:
            swap.handoff = handoff.Handoff(handoff.head_reader(swap.old.part.decoder))
            swap.old.part.tap = swap.handoff.tap
    r.at = time.monotonic()
    r.thread = threading.Thread(target=_make, args=(daemon, r, makes), name="audtrace-reload",
                                daemon=True)
    r.thread.start()
    return r


def _make(daemon, r: Reload, makes: list[slots.Slot]) -> None:
    try:
        for slot in makes:
            r.programs[slot] = daemon.make_program(slot.part)
            r.attached_ns[slot] = time.monotonic_ns()
    except Exception as e:      # ProbeError, or BCC's bare Exception: one line
        r.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def advance(daemon, r: Reload) -> bool:
    """One step when its time has come; True once the reload is over."""
    now = time.monotonic()
    if r.stage == "making":
        if r.thread.is_alive():
            return False
        return _attach(daemon, r)
    if r.stage == "attached" and now - r.at >= GRACE:
        _retire(daemon, r)
        return False
    if r.stage == "retired" and now - r.at >= TAIL:
        _finish(daemon, r)
        return True
    return False


def _fail(daemon, r: Reload, why: str) -> bool:
    for program in r.programs.values():
        program.close()
    for swap in r.swaps:
        swap.old.part.tap = None
    notice(f"reload failed, the configuration in force stays: {why}")
    daemon.notifier.ready(f"reload failed: {why}")
    return True


def _attach(daemon, r: Reload) -> bool:
    if r.error is not None:
        return _fail(daemon, r, r.error)
    try:
        daemon.apply_settings(r.cfg)
    except Exception as e:      # the new log cannot be opened: one line
        return _fail(daemon, r, str(e))
    for slot in r.incoming:
        daemon.add_part(slot.part, r.programs.get(slot))
    for swap in r.swaps:
        if swap.handoff is not None and swap.new.part.decoder is not None:
            swap.handoff.new_head = handoff.head_reader(swap.new.part.decoder)
            swap.new.part.screen = swap.handoff.screen
        elif swap.handoff is not None:      # the new slot has no program: nothing to screen
            swap.old.part.tap = None
    wanted = daemon.audit_rules([s.part for s in r.slots])
    current = list(daemon.audit.rules) if daemon.audit is not None else []
    steps = ruleset.steps(current, wanted)
    r.moved = [rule for op, rule in steps if op == "move"]
    try:
        daemon.add_rules([s for s in steps if s[0] != "remove"], current, wanted)
    except OSError as e:
        for slot in r.incoming:
            slot.part.screen = lambda _batch: []    # written by the old ones already
            daemon.retire_part(slot.part)
        r.programs.clear()
        return _fail(daemon, r, str(e))
    for rule in r.moved:
        notice(f"audit rule moved to keep the kernel's first-match order (out for an instant):"
               f" {rule}")
    daemon.set_relay()
    r.stage, r.at = "attached", time.monotonic()
    return False


def _retire(daemon, r: Reload) -> None:
    for swap in r.swaps:
        old, new = swap.old.part.program, swap.new.part.program
        if old is None or new is None:
            continue
        old.detach()
        with contextlib.suppress(KeyError, OSError):    # a program without an in-flight table
            r.stranded += handoff.stranded(handoff.in_flight(old), handoff.in_flight(new),
                                           r.attached_ns.get(swap.new, 0))
    for slot in r.outgoing:
        daemon.retire_part(slot.part)
        slot.part.tap = None
    daemon.reload_lost += r.stranded
    wanted = daemon.audit_rules([s.part for s in r.slots])
    daemon.remove_rules(wanted)
    daemon.slots = r.slots
    daemon.set_relay()
    r.stage, r.at = "retired", time.monotonic()


def _finish(daemon, r: Reload) -> None:
    screened = 0
    for swap in r.swaps:
        if swap.handoff is None or swap.new.part.screen is None:
            continue
        part = swap.new.part
        part.screen = None
        daemon._take_ebpf(part, swap.handoff.finish())
        screened += swap.handoff.dropped
    kept = len(r.slots) - len(r.incoming)
    what = (f"{kept} kept, {len(r.swaps)} replaced, {len(r.added)} added,"
            f" {len(r.removed)} removed")
    extra = f"; {screened} events both programs saw written once" if screened else ""
    if r.stranded:
        extra += (f"; {r.stranded} syscalls in progress across the reload seen whole by"
                  " neither program, counted as lost")
    notice(f"configuration reloaded: slots {what}{extra}")
    daemon.notifier.ready(f"tracing {daemon.names()}")


def abort(daemon, r: Reload) -> None:
    """The daemon stops during a reload: what is made goes; held events are written."""
    if r.stage == "making":
        r.thread.join()
        for program in r.programs.values():
            program.close()
        for swap in r.swaps:
            swap.old.part.tap = None
        return
    for swap in r.swaps:
        if swap.handoff is not None and swap.new.part.screen is not None \
                and swap.new.part.program is not None:
            swap.new.part.screen = None
            daemon._take_ebpf(swap.new.part, swap.handoff.finish())
