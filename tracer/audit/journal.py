"""What audtrace runs put in the kernel, written down before it is put there.

Audit rules, the audit `enabled` flag and a tracefs mount are machine-wide and outlive the
process that made them: a run killed with SIGKILL (OOM killer, a crash in a native library)
cannot take them back. So every change is recorded in /run/audtrace/journal.json *before* it
is made, owned by the runs that hold it. /run is a tmpfs: the journal outlives a killed
process but not a reboot, exactly like the kernel state it describes.

- holders: "pid/serial" (one process may hold several things) -> the process's start time,
  so a reused pid is never taken for the run that died;
- rules: each rule audtrace added (its kernel form, matched exactly against the kernel's
  list), and the holders that use it: identical requests of runs at once share one rule;
- restore_enabled: what `enabled` was before the first run turned it on, and `audit`, the
  holders using kernel audit, which keep it on;
- mounts: tracefs mounted by audtrace, and the holders that use it.

Whatever no live holder needs is due to be undone (`Journal.due`): by the last run out, by
the next run of any subcommand, or by `audtrace cleanup` (cleanup.py). A rule that was in the
kernel before, a mount audtrace did not make, are never recorded, so never undone.

Every read-modify-write holds a mutex: an abstract unix socket name, which the kernel frees
when its holder dies, so a crash never leaves a lock behind. Abstract names are per network
namespace, and pids are read in this pid namespace: runs in other namespaces that share /run
are neither serialized nor told from dead ones (give them a /run of their own).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

RUN_DIR = Path(os.environ.get("AUDTRACE_RUN_DIR", "/run/audtrace"))
LOCK_NAME = b"\0audtrace-kernel-state"
_serial = count(1)


def new_holder() -> str:
    """This process and a serial: one process may hold several things (audit, a mount)."""
    return f"{os.getpid()}/{next(_serial)}"


def pid_of(holder: str) -> int:
    return int(holder.split("/")[0])


def start_time(pid: int) -> int | None:
    """A running process's start time in clock ticks since boot (/proc/PID/stat field 22);
    None when there is no such process, or only its zombie (killed, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, *rest = stat.rsplit(")", 1)[1].split()
    return None if state in ("Z", "X") else int(rest[18])


@dataclass
class Held:
    """One thing audtrace put in the kernel, and the holders that still use it."""
    what: dict[str, Any]    # a rule: Rule's list, action, syscalls, fields; a mount: fstype
    holders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    """One thing due to be undone, and the holders (all gone) it was held for."""
    kind: str               # "rule", "enabled" or "mount"
    key: str                # the rule's text, the mount point; "" for the flag
    what: Any               # the rule's kernel form, the value to restore, the fstype
    holders: tuple[str, ...]


@dataclass
class Journal:
    holders: dict[str, int] = field(default_factory=dict)
    audit: list[str] = field(default_factory=list)
    restore_enabled: int | None = None
    rules: dict[str, Held] = field(default_factory=dict)
    mounts: dict[str, Held] = field(default_factory=dict)

    def hold(self, holder: str) -> None:
        """Register a holder of this process (before it changes anything)."""
        start = start_time(pid_of(holder))
        if start is not None:
            self.holders[holder] = start

    def live(self) -> set[str]:
        """Holders whose process still runs (same pid and start time)."""
        return {h for h, start in self.holders.items() if start_time(pid_of(h)) == start}

    def due(self, live: set[str]) -> list[Item]:
        """What no live holder needs any more, in the order to undo it: rules newest first,
        then the flag, then mounts. Entries with no holder at all (an undo that failed
        before) are due again."""
        def gone(held: list[str]) -> bool:
            return not any(h in live for h in held)
        items = [Item("rule", text, held.what, tuple(held.holders))
                 for text, held in reversed(self.rules.items()) if gone(held.holders)]
        if self.restore_enabled is not None and gone(self.audit):
            items.append(Item("enabled", "", self.restore_enabled, tuple(self.audit)))
        items += [Item("mount", path, held.what["fstype"], tuple(held.holders))
                  for path, held in reversed(self.mounts.items()) if gone(held.holders)]
        return items

    def forget(self, live: set[str], done: list[Item]) -> None:
        """Drop every holder not in `live` and the items undone. A due item that could not
        be undone stays, with no holder: the next run tries again."""
        self.holders = {h: s for h, s in self.holders.items() if h in live}
        self.audit = [h for h in self.audit if h in live]
        for held in (*self.rules.values(), *self.mounts.values()):
            held.holders = [h for h in held.holders if h in live]
        for item in done:
            if item.kind == "rule":
                self.rules.pop(item.key, None)
            elif item.kind == "mount":
                self.mounts.pop(item.key, None)
            else:
                self.restore_enabled = None

    def merge(self, other: Journal) -> None:
        """Add what `other` records (a holder's own account of what it holds, for when the
        journal could not be had or was lost)."""
        self.holders.update(other.holders)
        self.audit += [h for h in other.audit if h not in self.audit]
        if self.restore_enabled is None:
            self.restore_enabled = other.restore_enabled
        for mine, theirs in ((self.rules, other.rules), (self.mounts, other.mounts)):
            for key, held in theirs.items():
                into = mine.setdefault(key, Held(dict(held.what)))
                into.holders += [h for h in held.holders if h not in into.holders]

    def empty(self) -> bool:
        return not (self.holders or self.rules or self.mounts or self.restore_enabled is not None)

    def to_json(self) -> dict[str, Any]:
        return {"holders": self.holders, "audit": self.audit,
                "restore_enabled": self.restore_enabled,
                "rules": {k: vars(v) for k, v in self.rules.items()},
                "mounts": {k: vars(v) for k, v in self.mounts.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Journal:
        return cls({str(k): int(v) for k, v in raw.get("holders", {}).items()},
                   [str(h) for h in raw.get("audit", [])], raw.get("restore_enabled"),
                   {k: Held(dict(v["what"]), list(v["holders"]))
                    for k, v in raw.get("rules", {}).items()},
                   {k: Held(dict(v["what"]), list(v["holders"]))
                    for k, v in raw.get("mounts", {}).items()})


def path() -> Path:
    return RUN_DIR / "journal.json"


def load(strict: bool = False) -> Journal:
    """The journal; an empty one when there is none. Unreadable (not root) or garbled: an
    empty one too, or OSError/ValueError when `strict`."""
    try:
        return Journal.from_json(json.loads(path().read_text()))
    except FileNotFoundError:
        return Journal()
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as e:
        if strict:
            raise OSError(getattr(e, "errno", None) or errno.EIO,
                          f"cannot read {path()}: {getattr(e, 'strerror', None) or e}") from None
        return Journal()


def save(journal: Journal) -> None:
    """Replace the journal atomically (a temporary file renamed over it): a run killed while
    writing leaves the previous journal whole. No fsync: a killed process's writes are in the
    page cache already, and a power loss takes the tmpfs and the kernel state alike."""
    target = path()
    if journal.empty():
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        with contextlib.suppress(OSError):
            RUN_DIR.rmdir()
        return
    RUN_DIR.mkdir(mode=0o700, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps(journal.to_json()))
    tmp.replace(target)


def hold_mount(holder: str, mount_point: str, fstype: str, *, join: bool) -> bool:
    """Record `holder` as a user of a mount: one it is about to make (join=False), or one
    another run made (join=True: only when the journal has it). False when not recorded."""
    if join and mount_point not in load().mounts:
        return False        # mounted by someone else: not audtrace's to undo (no lock needed)
    with locked() as ok:
        journal = load() if ok else None
        if journal is None or (join and mount_point not in journal.mounts):
            return False
        journal.hold(holder)
        held = journal.mounts.setdefault(mount_point, Held({"fstype": fstype}))
        held.holders.append(holder)
        save(journal)
    return True


@contextlib.contextmanager
def locked(timeout: float = 10.0) -> Iterator[bool]:
    """Hold the mutex; yields False when it could not be had within `timeout` s (the caller
    then acts on its own view, as if alone)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    end = time.monotonic() + timeout
    held = False
    try:
        while not held:
            try:
                sock.bind(LOCK_NAME)
                held = True
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() >= end:
                    break
                time.sleep(0.005)
        yield held
    finally:
        sock.close()
