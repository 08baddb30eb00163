"""Kernel audit state shared by the audtrace runs of one machine.

The `enabled` flag and the audit rules are global. When two runs use kernel audit at once,
the first to finish must neither turn audit off under the other nor remove a rule the other
still reads. So every run registers in /run/audtrace/audit.json (tmpfs, gone at boot): which
run wants which rule, and what `enabled` was before the first of them changed it. The last
run out restores the flag and removes the file and its directory. Runs that died without
cleaning up (SIGKILL) are pruned by pid and start time.

Every read-modify-write holds a mutex: an abstract unix socket name, which the kernel frees
when its holder dies, so a crash never leaves a lock behind (nor a file for one). Abstract
names are per network namespace: runs in different network namespaces that share /run are
not serialized.
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

RUN_DIR = Path(os.environ.get("AUDTRACE_RUN_DIR", "/run/audtrace"))
LOCK_NAME = b"\0audtrace-audit-state"
_serial = count(1)


def user_id() -> str:
    """This process and a serial: one process may hold several audit sources."""
    return f"{os.getpid()}/{next(_serial)}"


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class Shared:
    restore_enabled: int | None = None          # what `enabled` was before the first run
    users: dict[str, int] = field(default_factory=dict)        # user -> its start time
    rules: dict[str, list[str]] = field(default_factory=dict)  # rule text -> its users

    def alive(self, user: str) -> bool:
        start = self.users.get(user)
        return start is not None and start_time(int(user.split("/")[0])) == start

    def prune(self) -> None:
        """Forget runs that are gone; with none left, nothing is owed to anyone."""
        self.users = {u: s for u, s in self.users.items() if self.alive(u)}
        self.rules = {r: [u for u in us if u in self.users] for r, us in self.rules.items()}
        self.rules = {r: us for r, us in self.rules.items() if us}
        if not self.users:
            self.restore_enabled = None


def _path() -> Path:
    return RUN_DIR / "audit.json"


def load() -> Shared:
    try:
        raw = json.loads(_path().read_text())
        state = Shared(raw.get("restore_enabled"), dict(raw.get("users", {})),
                       {k: list(v) for k, v in raw.get("rules", {}).items()})
    except (OSError, ValueError, AttributeError, TypeError):
        state = Shared()    # missing or unreadable: no run to share with
    state.prune()
    return state


def save(state: Shared) -> None:
    path = _path()
    if not state.users:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            RUN_DIR.rmdir()
        return
    RUN_DIR.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps({"restore_enabled": state.restore_enabled, "users": state.users,
                               "rules": state.rules}))
    tmp.replace(path)


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
