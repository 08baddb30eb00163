"""Undo what the journal (journal.py) says no live run needs any more.

One way back for every case: a run leaving (the last of the runs sharing a rule, the flag or
a mount puts it back), the start of every subcommand, and `audtrace cleanup` (runs that were
killed). Only what audtrace recorded is undone, and only when it is still there: a rule
absent from the kernel, a flag already at its old value, a mount already gone are forgotten
without a word. An undo that fails is reported with the command that does it by hand, and
stays in the journal for the next run to try again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audtrace.compat.rules import Rule
from audtrace.tracer.audit import journal
from audtrace.tracer.audit.journal import Item, Journal

if TYPE_CHECKING:
    from audtrace.tracer.audit.netlink import AuditNetlink

Notice = Callable[[str], None]

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def rule_what(rule: Rule) -> dict[str, Any]:
    """A rule's kernel form, as the journal keeps it."""
    return {"list": rule.list, "action": rule.action, "syscalls": list(rule.syscalls),
            "fields": [list(f) for f in rule.fields]}


def rule_of(what: dict[str, Any]) -> Rule:
    return Rule(list=what["list"], action=what["action"], syscalls=tuple(what["syscalls"]),
                fields=tuple(tuple(f) for f in what["fields"]))


@dataclass
class Report:
    summaries: list[str] = field(default_factory=list)  # one per run whose leftovers went
    details: list[str] = field(default_factory=list)    # each thing undone (audtrace cleanup)
    failures: list[str] = field(default_factory=list)   # each undo that failed, and the fix

    @property
    def lines(self) -> list[str]:
        return self.summaries + self.failures


class _Kernel:
    """The audit socket, opened only when something of audit's is due; rules listed once."""

    def __init__(self, stack: contextlib.ExitStack, ctl: AuditNetlink | None) -> None:
        self.stack, self._ctl, self._rules = stack, ctl, None

    def ctl(self) -> AuditNetlink:
        if self._ctl is None:
            from audtrace.tracer.audit.netlink import AuditNetlink

            self._ctl = self.stack.enter_context(AuditNetlink())
        return self._ctl

    def rules(self) -> list[Rule]:
        if self._rules is None:
            self._rules = self.ctl().list_rules()
        return self._rules


def is_mounted(mount_point: str, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(p[1:3] == [mount_point, fstype] for p in map(str.split, f) if len(p) > 2)


def unmount(mount_point: str) -> None:
    if _libc.umount2(mount_point.encode(), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _undo(item: Item, kernel: _Kernel, dry_run: bool) -> bool:
    """Undo one item; False when there was nothing to undo. Raises OSError on failure."""
    if item.kind == "rule":
        rule = rule_of(item.what)
        if rule not in kernel.rules():
            return False
        if not dry_run:
            try:
                kernel.ctl().del_rule(rule)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                return False
        return True
    if item.kind == "enabled":
        now = kernel.ctl().status()["enabled"]
        if now == item.what:
            return False
        if now == 2:
            raise OSError(errno.EPERM, "audit is locked (enabled=2) until reboot")
        if not dry_run:
            kernel.ctl().set_enabled(item.what)
        return True
    if not is_mounted(item.key, item.what):
        return False
    if not dry_run:
        unmount(item.key)
    return True


def _what(items: list[Item], dry_run: bool) -> list[str]:
    rules = sum(i.kind == "rule" for i in items)
    out = []
    if rules:
        out.append(f"{'remove' if dry_run else 'removed'} {rules} audit rule"
                   + ("s" if rules > 1 else ""))
    out += [f"set audit enabled back to {i.what}" for i in items if i.kind == "enabled"]
    out += [f"{'unmount' if dry_run else 'unmounted'} {i.what} at {i.key}"
            for i in items if i.kind == "mount"]
    return out


def _failure(item: Item, e: Exception) -> str:
    why = getattr(e, "strerror", None) or str(e)
    if item.kind == "rule":
        return f"could not remove audit rule {item.key}: {why}; by hand: auditctl -d {item.key[3:]}"
    if item.kind == "enabled":
        return f"could not set audit enabled back to {item.what}: {why}; by hand: " \
               f"auditctl -e {item.what}"
    return f"could not unmount {item.what} at {item.key}: {why}; by hand: umount {item.key}"


def _detail(item: Item) -> str:
    if item.kind == "rule":
        return f"  audit rule {item.key}"
    if item.kind == "enabled":
        return f"  audit enabled flag -> {item.what}"
    return f"  {item.what} mount at {item.key}"


def settle(j: Journal, *, quiet: str | None = None, ctl: AuditNetlink | None = None,
           dry_run: bool = False) -> Report:
    """Undo what no live holder of `j` needs, then forget it and the holders that are gone
    (the caller holds the lock and saves `j`). What was held by `quiet` alone (the run
    leaving now, putting back its own changes) is not reported."""
    live = j.live()
    due = j.due(live)
    report = Report()
    done: list[Item] = []
    by_run: dict[int | None, list[Item]] = {}   # the gone run it is undone for (None: unknown)
    with contextlib.ExitStack() as stack:
        kernel = _Kernel(stack, ctl)
        for item in due:
            try:
                there = _undo(item, kernel, dry_run)
            except (OSError, ValueError) as e:     # ValueError: a garbled entry
                report.failures.append(_failure(item, e))
                continue
            done.append(item)
            others = [h for h in item.holders if h != quiet]
            if there and (others or not item.holders):
                by_run.setdefault(journal.pid_of(others[0]) if others else None,
                                  []).append(item)
                report.details.append(_detail(item))
    for pid, items in by_run.items():
        run = f"run {pid} (it ended without cleaning up)" if pid else "an earlier run"
        report.summaries.append(f"{'would restore' if dry_run else 'restored'} what {run} "
                                "left: " + ", ".join(_what(items, dry_run)))
    if not dry_run:
        j.forget(live, done)
    return report


def leave(holder: str, mine: Journal, notice: Notice, ctl: AuditNetlink | None = None) -> None:
    """`holder` is done: put back what no live run needs any more, its own changes (`mine`,
    its own account of them) and whatever runs that are gone left."""
    with journal.locked() as ok:
        j = journal.load() if ok else Journal()
        j.merge(mine)
        j.holders.pop(holder, None)
        report = settle(j, quiet=holder, ctl=ctl)
        if ok:
            journal.save(j)
    for line in report.lines:
        notice(line)


def collect(dry_run: bool = False) -> Report:
    """Undo what runs that are gone left (`audtrace cleanup`). Raises OSError when the
    journal cannot be read or its lock had."""
    with journal.locked() as ok:
        if not ok:
            raise OSError(errno.EBUSY, "the journal's lock is held by another audtrace for"
                          " 10 s; try again")
        j = journal.load(strict=True)
        report = settle(j, dry_run=dry_run)
        if not dry_run:
            journal.save(j)
    return report


def at_start(notice: Notice) -> None:
    """What every subcommand does first: put back what runs that are gone left. Quick when
    there is nothing to do (no journal, or every holder alive: no lock taken); never stops
    the run (a failure is one notice)."""
    j = journal.load()
    live = j.live()
    if set(j.holders) <= live and not j.due(live):
        return
    try:
        lines = collect().lines
    except (OSError, ValueError) as e:
        lines = [f"could not undo what earlier runs left: {e}"]
    with contextlib.suppress(OSError):    # stderr gone: the run finds out on its own
        for line in lines:
            notice(line)
