"""Kernel audit as an event source: rules in, records out, the system left as found.

`AuditSource` adds the rules that express a request, relays every record the kernel
multicasts (AUDIT_NLGRP_READLOG) as compat Events, and on every exit path removes exactly
the rules it added and restores the `enabled` flag. Cleanup is idempotent and consumes its
own state step by step, so a second call (a signal handler, atexit) finishes what an
interrupted first call left, and nothing is undone twice. Every change is recorded in the
journal (journal.py) before it is made: runs at the same time share the flag and identical
rules, the last one out puts them back, and what a run killed with SIGKILL added is put back
by the next run (cleanup.py).
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NamedTuple

from audtrace.compat import record
from audtrace.compat.rules import Rule
from audtrace.tracer.audit import cleanup, journal
from audtrace.tracer.audit.netlink import (
    AUDIT_EOE,
    AuditError,
    AuditNetlink,
    AuditReader,
)

# ausearch/auparse's own rule for "this record is a whole event" (auparse.c au_check_events):
# below AUDIT_FIRST_EVENT, from AUDIT_FIRST_ANOM_MSG on, AUDIT_KERNEL, the NetLabel range.
AUDIT_FIRST_EVENT = 1300
AUDIT_FIRST_ANOM_MSG = 2100
AUDIT_KERNEL = 2000
AUDIT_MAC_UNLBL_ALLOW, AUDIT_MAC_CALIPSO_DEL = 1406, 1419

# auditd's default end_of_event_timeout: an event without EOE is complete after this long
EOE_TIMEOUT = 2.0

_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

# Test-only: the run stops itself (SIGSTOP) right after adding its first rule, so a test can
# kill it with SIGKILL between its first and its last rule. Never set it otherwise.
STOP_AFTER_FIRST_RULE = "AUDTRACE_TEST_STOP_AFTER_FIRST_RULE"

AUDIT_WAS_OFF = ("audit was off: enabled it; processes started before now are not audited "
                 "(no audit context)")


class AuditLockedError(AuditError):
    """Audit is locked (enabled=2): rules can neither be added nor removed until reboot."""


class AuditLoss(NamedTuple):
    kernel: int     # kernel `lost` counter delta since start (backlog overflow, rate limit)
    overruns: int   # ENOBUFS on our multicast socket: records dropped, count unknown

    @property
    def total(self) -> int:
        return self.kernel + self.overruns


def is_single_record(msg_type: int) -> bool:
    return (msg_type < AUDIT_FIRST_EVENT or msg_type >= AUDIT_FIRST_ANOM_MSG
            or msg_type == AUDIT_KERNEL
            or AUDIT_MAC_UNLBL_ALLOW <= msg_type <= AUDIT_MAC_CALIPSO_DEL)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold termination signals during a rule change, so "added" and "remembered" are one step.

    Only the calling thread's mask changes; a no-op where pthread_sigmask is missing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exit_on_signal(signum: int, _frame: object) -> None:
    # unwinds through AuditSource.__exit__ (or atexit), which restores the audit state
    raise SystemExit(128 + signum)


class _Pending:
    __slots__ = ("sec", "msec", "records", "since")

    def __init__(self, sec: int, msec: int) -> None:
        self.sec, self.msec = sec, msec
        self.records: list[record.Record] = []
        self.since = time.monotonic()


class AuditSource:
    """Kernel audit records for the given rules, as compat Events (source="audit").

    Use as a context manager. `fileno()` is readable when records are queued; then call
    `read_events()`. SIGTERM/SIGHUP, while at their default action, are turned into
    SystemExit for the lifetime of the source so the cleanup runs; SIGKILL cannot be helped.
    Not thread-safe: open, read and close from one thread (close also from its signal
    handlers or atexit).
    """

    def __init__(self, rules: list[Rule], on_notice: Callable[[str], None],
                 *, eoe_timeout: float = EOE_TIMEOUT, handle_signals: bool = True,
                 rcvbuf: int = 32 << 20,
                 on_refused: Callable[[Rule, AuditError], bool] | None = None,
                 records: bool = True) -> None:
        self.rules = list(rules)
        self.records = records           # False: rules only, no multicast reader
        self.on_refused = on_refused     # a rule the kernel refused: True to load the rest
        self.on_notice = on_notice
        self.eoe_timeout = eoe_timeout
        self.handle_signals = handle_signals
        self.rcvbuf = rcvbuf
        self.malformed = 0               # records without a parsable audit(...) stamp
        self._reader: AuditReader | None = None
        self._ctl: AuditNetlink | None = None
        self._added: list[Rule] = []      # rules in the kernel because of us
        self._restore_enabled: int | None = None
        self._lost_start = 0
        self._lost_final: int | None = None
        self._old_handlers: dict[int, object] = {}
        self._pending: dict[int, _Pending] = {}
        self._open = False
        self._user = journal.new_holder()

    # ---- lifecycle
    def __enter__(self) -> AuditSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            with _signals_deferred():
                self._open = True
                atexit.register(self.close)
                self._install_signal_handlers()
                # the reader first: every record from here on is seen, our own rule
                # additions (CONFIG_CHANGE) included
                if self.records:
                    self._reader = AuditReader(self.rcvbuf)
                self._ctl = AuditNetlink()
                status = self._ctl.status()
                self._lost_start = status["lost"]
                if status["enabled"] == 2:
                    raise AuditLockedError(errno.EPERM, "audit is locked (enabled=2): rules "
                                           "cannot be added or removed until reboot")
                if status["pid"]:
                    self.on_notice(f"auditd (pid {status['pid']}) is running: the records of "
                                   "audtrace's rules also go to its log")
                with journal.locked() as ok:
                    self._record(journal.load() if ok else journal.Journal(), ok)
        except BaseException:
            self.close()
            raise

    def _record(self, j: journal.Journal, ok: bool) -> None:
        """Put back what dead runs left, then enable audit and add the rules, each change
        written to the journal before it is asked for (`ok`: the journal's lock is held)."""
        assert self._ctl is not None

        def write() -> None:
            if ok:
                journal.save(j)

        for line in cleanup.settle(j, ctl=self._ctl).lines:
            self.on_notice(line)
        j.hold(self._user)
        j.audit.append(self._user)
        write()
        if self._ctl.status()["enabled"] == 0:
            self.on_notice(AUDIT_WAS_OFF)
            if j.restore_enabled is None:
                j.restore_enabled = 0
                write()
            self._enable()
        existing = self._ctl.list_rules()
        for rule in self.rules:
            self._add(rule, existing, j, write)
        write()

    # Each change is remembered before it is asked for; when the request fails, the kernel
    # is asked whether it happened anyway (a reply lost to a timeout) before forgetting it.
    def _enable(self) -> None:
        assert self._ctl is not None
        self._restore_enabled = 0
        try:
            self._ctl.set_enabled(1)
        except AuditError:
            with suppress(AuditError):
                if self._ctl.status()["enabled"] == 0:
                    self._restore_enabled = None
            raise

    def _add(self, rule: Rule, existing: list[Rule], j: journal.Journal,
             write: Callable[[], None]) -> None:
        assert self._ctl is not None
        held = j.rules.get(str(rule))
        if rule in existing:
            if held is not None:
                # another audtrace run added it: ours too, removed by the last of us
                held.holders.append(self._user)
                self._added.append(rule)
            else:
                self.on_notice(f"audit rule already present, left as is: {rule}")
            return
        if held is None:
            held = j.rules[str(rule)] = journal.Held(cleanup.rule_what(rule))
        held.holders.append(self._user)
        self._added.append(rule)
        write()
        try:
            self._ctl.add_rule(rule)
        except AuditError as e:
            if e.errno == errno.EEXIST:  # someone added it just now: not ours
                self._added.pop()
                held.holders.remove(self._user)
                if not held.holders:
                    del j.rules[str(rule)]
                write()
                return
            with suppress(AuditError):
                if rule not in self._ctl.list_rules():
                    self._added.pop()
            if self._added[-1:] != [rule] and self.on_refused and self.on_refused(rule, e):
                # not in the kernel: nothing of ours to undo
                held.holders.remove(self._user)
                if not held.holders:
                    del j.rules[str(rule)]
                write()
                return
            raise
        if os.environ.get(STOP_AFTER_FIRST_RULE) and len(self._added) == 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    def update(self, steps: list[tuple[str, Rule]], rules: list[Rule],
               on_refused: Callable[[Rule, AuditError], bool] | None = None) -> None:
        """Change the rules of an open source in place (the daemon's reload): each step in
        order, `add` a rule, `move` one (taken out, then added again at the end of its
        list, for the kernel's first-match order), `remove` one; `rules` is the set once
        done. A rule left unchanged is never touched. Journaled as at open. A rule the
        kernel refuses raises AuditError with the rules this update added taken out again,
        unless `on_refused` says to go on."""
        assert self._ctl is not None
        saved, self.on_refused = self.on_refused, on_refused or self.on_refused
        try:
            with _signals_deferred(), journal.locked() as ok:
                j = journal.load() if ok else journal.Journal()

                def write() -> None:
                    if ok:
                        journal.save(j)

                j.hold(self._user)
                added: list[Rule] = []
                try:
                    for op, rule in steps:
                        if op in ("move", "remove"):
                            self._drop(rule, j, write)
                        if op in ("add", "move"):
                            before = len(self._added)
                            self._add(rule, self._ctl.list_rules(), j, write)
                            if len(self._added) > before:
                                added.append(rule)
                except BaseException:
                    for rule in reversed(added):
                        with suppress(AuditError):
                            self._drop(rule, j, write)
                    raise
                finally:
                    write()
        finally:
            self.on_refused = saved
        self.rules = list(rules)

    def _drop(self, rule: Rule, j: journal.Journal, write: Callable[[], None]) -> None:
        """Take out a rule this source added: from the kernel when no other live run holds
        it. The journal first says nobody holds it, so a crash in between leaves it due."""
        assert self._ctl is not None
        if rule not in self._added:
            return                  # it was there before us: never ours to take out
        self._added.remove(rule)
        held = j.rules.get(str(rule))
        if held is not None:
            with suppress(ValueError):
                held.holders.remove(self._user)
            live = j.live()
            if any(h in live for h in held.holders):
                write()
                return
        write()
        try:
            self._ctl.del_rule(rule)
        except AuditError as e:
            if e.errno != errno.ENOENT:
                raise
        j.rules.pop(str(rule), None)
        write()

    def close(self) -> None:
        """Remove our rules, restore `enabled`, close sockets. Idempotent, never raises."""
        with _signals_deferred():
            if self._open or self._added or self._restore_enabled is not None:
                self._undo()
            if self._open:
                self._open = False
                self._restore_signal_handlers()
                atexit.unregister(self.close)
                for sock in (self._reader, self._ctl):
                    if sock is not None:
                        sock.close()

    def _undo(self) -> None:
        # a fresh socket: close() may have interrupted a request on self._ctl
        try:
            ctl = AuditNetlink()
        except AuditError as e:
            self.on_notice(f"cannot restore audit state: {e}")
            return
        with ctl:
            with suppress(AuditError):
                self._lost_final = self._lost_delta(ctl.status()["lost"])
            # what this run holds by its own account: the journal may not have been had
            mine = journal.Journal(audit=[self._user], restore_enabled=self._restore_enabled)
            for rule in self._added:
                mine.rules[str(rule)] = journal.Held(cleanup.rule_what(rule), [self._user])
            try:
                cleanup.leave(self._user, mine, self.on_notice, ctl)
            except OSError as e:    # the kernel is put back; the journal or a notice failed
                with suppress(OSError):
                    self.on_notice(f"after restoring audit: {e}")
            self._added.clear()
            self._restore_enabled = None

    def _install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for signum in _EXIT_SIGNALS:
            if signal.getsignal(signum) == signal.SIG_DFL:
                self._old_handlers[signum] = signal.signal(signum, _exit_on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        while self._old_handlers:
            signum, handler = self._old_handlers.popitem()
            signal.signal(signum, handler)  # type: ignore[arg-type]

    # ---- records
    def fileno(self) -> int:
        if self._reader is None:
            raise ValueError("audit source is not open")
        return self._reader.fileno()

    def read_events(self) -> list[record.Event]:
        """Events completed by what is queued now (non-blocking), and stale ones."""
        done: list[record.Event] = []
        if self._reader is not None and self._open:
            for msg_type, text in self._reader.recv_records():
                event = self._take(msg_type, text)
                if event is not None:
                    done.append(event)
        done.extend(self.flush(self.eoe_timeout))
        return done

    def _take(self, msg_type: int, text: str) -> record.Event | None:
        try:
            sec, msec, serial, body = record.parse_netlink(msg_type, text)
        except ValueError:
            self.malformed += 1
            return None
        if msg_type == AUDIT_EOE:
            return self._complete(serial)
        rec = record.Record(type=record.record_type_name(msg_type), fields=[], body=body)
        pending = self._pending.get(serial)
        if pending is None:
            if is_single_record(msg_type):
                return record.Event(sec, msec, serial, [rec], source="audit")
            pending = self._pending[serial] = _Pending(sec, msec)
        pending.records.append(rec)
        return self._complete(serial) if is_single_record(msg_type) else None

    def _complete(self, serial: int) -> record.Event | None:
        pending = self._pending.pop(serial, None)
        if pending is None:
            return None
        return record.Event(pending.sec, pending.msec, serial, pending.records, source="audit")

    def flush(self, max_age: float = 0.0) -> list[record.Event]:
        """Emit incomplete events whose first record came more than `max_age` seconds ago."""
        now = time.monotonic()
        stale = [s for s, p in self._pending.items() if now - p.since >= max_age]
        return [e for e in map(self._complete, stale) if e is not None]

    # ---- loss
    def _lost_delta(self, lost_now: int) -> int:
        # the counter can be reset by others (AUDIT_SET with AUDIT_STATUS_LOST)
        return lost_now - self._lost_start if lost_now >= self._lost_start else lost_now

    def lost(self) -> AuditLoss:
        """Records lost since open: the kernel's counter delta and our socket's overruns."""
        overruns = self._reader.overruns if self._reader is not None else 0
        if self._lost_final is not None or self._ctl is None or not self._open:
            return AuditLoss(self._lost_final or 0, overruns)
        return AuditLoss(self._lost_delta(self._ctl.status()["lost"]), overruns)
