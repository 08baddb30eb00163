"""auditd's plugins (auditd-plugins(5)), run and fed by audtrace as auditd runs and feeds them.

Configuration: every `NAME.conf` of the plugin directory (no leading dot, no other dot, so
editors' and dpkg's backups stay out), `key = value` lines as auditd's parser reads them
(words split on whitespace, `=` a word of its own, `#` starting a comment line, keywords
and values in any case, a later line overriding an earlier one). Only active plugins are
checked beyond the syntax. The files and the programs must be owned by root (or by the user
audtrace runs as) and writable by nobody else; a program must be a regular file with at
least r-x for owner and group, as auditd 4 requires. Any error is a `PluginError`: one line
naming the file, the line and the key.

Supported: `active`, `direction = out`, `path` (absolute), `type = always`, `args` (any
number of words, as auditd 4; auditd 3.0 takes two), `format = string`. Refused when active:
auditd's built-in plugins (`builtin_af_unix`, `type = builtin`: audtrace runs none of its
own; auditd 3.1 and later run `/sbin/audisp-af_unix` as an ordinary plugin instead) and
`format = binary` (auditd's in-memory structs). `direction = in` is refused, as by auditd.

Running: as auditd's dispatcher, each plugin is its own process, execve'd without a shell,
argv[0] the path, with an empty environment, signals at their defaults, no inherited
descriptor but its stdin, the read end of a pipe (auditd uses a socketpair; a pipe also
tells audisp-remote to send what it holds before it exits). stdout is /dev/null, as
audtrace's stdout may be the audit log; stderr is audtrace's, as auditd's plugins share its
stderr. Each plugin leads a session of its own, as auditd's children do under a detached
daemon: a terminal's Ctrl-C reaches audtrace, which then stops its plugins in order.

Feeding: each event's RAW lines, and after an event of a syscall (or of several records)
the EOE record the kernel ends it with: auditd keeps EOE out of its log but hands it to its
plugins, and laurel writes a syscall event only once EOE has come. Writes never block the
tracer: the pipe is non-blocking (1 MiB where the system allows); what does not fit waits in
the plugin's queue (`q_depth` events, auditd.conf's default 2000), and an event arriving
at a full queue is that plugin's miss. A plugin is never handed part of an event and then
something else: the rest of a partly written event is written first.

Misses (`lost()`, summed over plugins) are exact as far as the pipe can tell: audtrace holds
the pipe's read end too, so when a plugin dies the events still unread in it are counted;
an event the plugin had read but not yet handled cannot be seen from outside. What is queued
goes to the restarted plugin whole. A plugin that dies is restarted at once, up to
`max_restarts` times in all (auditd's rule); after that every event is its miss. `close()`
writes what is queued (for up to 2 s), closes the pipes (plugins end at EOF, as auditd's
do), sends SIGTERM to those still running after 2 s (auditd's signal at its own exit),
SIGKILL after 5 s more, and counts whatever they had not read.

Interface (what the daemon uses):

    plugins = Plugins.from_dir(path, max_restarts, notice)   # PluginError: one line
    plugins.start()            # runs every active plugin; PluginError if one cannot run
    plugins.feed(data)         # bytes: whole events' RAW lines, as auditd sends them
    plugins.poll()             # every loop turn: restart the dead, write what waits
    plugins.lost()             # int: events plugins missed, all counted
    plugins.backlog()          # events queued or unread in the pipes
    plugins.reload(path=None)  # SIGHUP to each; with the directory, its changes applied
    plugins.close()            # the end: flush, EOF, SIGTERM, SIGKILL (bounded)

`notice(line)` is called with one line for each plugin restarted, given up or ended with
events unread.

The caller polls: `poll()` every loop iteration reaps dead plugins (only its own children,
through their pids) and writes what waits. Nothing here reaps other processes; the caller
must not reap children wholesale (waitpid(-1), SIGCHLD ignored), or a plugin's death reads
as a clean exit.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import signal
import stat
import subprocess
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

DEFAULT_Q_DEPTH = 2000        # auditd.conf's q_depth: events waiting per plugin
PIPE_SIZE = 1 << 20           # the pipe's room, Linux's default pipe-max-size
WRITE_CHUNK = 1 << 16         # bytes handed to one write()
CLOSE_FLUSH_S = 2.0           # close(): time to write what is queued
CLOSE_EOF_S = 2.0             # ... for plugins to end at EOF before SIGTERM
CLOSE_TERM_S = 5.0            # ... and after SIGTERM before SIGKILL
KEYS = ("active", "direction", "path", "type", "args", "format")


class PluginError(Exception):
    """A plugin configuration or start-up error: one line, file, line and key named."""


@dataclass(frozen=True)
class PluginConf:
    file: str
    active: bool
    path: str = ""
    args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return os.path.basename(self.file)


def _owned_safely(st: os.stat_result) -> str | None:
    """auditd's rule for its plugin files and programs, as a reason when broken."""
    if st.st_uid not in (0, os.geteuid()):
        return "not owned by root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by group or others"
    return None


def read_conf(file: str) -> PluginConf:
    """One plugin file, checked as auditd checks it (PluginError if it would refuse it)."""
    try:
        st = os.stat(file)
        if not stat.S_ISREG(st.st_mode):
            raise PluginError(f"{file}: not a regular file")
        with open(file, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise PluginError(f"{file}: {e.strerror}") from None
    bad = _owned_safely(st)
    if bad:
        raise PluginError(f"{file}: {bad}")
    seen: dict[str, tuple[int, list[str]]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        key = words[0].split("=", 1)[0]
        where = f"{file}:{lineno}: {key}"
        if len(words) < 3 or words[1] != "=":
            raise PluginError(f"{where}: expected `{key} = value` (spaces around =)")
        if key.lower() not in KEYS:
            raise PluginError(f"{where}: unknown keyword (auditd knows {', '.join(KEYS)})")
        if key.lower() != "args" and len(words) > 3:
            raise PluginError(f"{where}: one value only, got {' '.join(words[2:])!r}")
        seen[key.lower()] = (lineno, words[2:])

    def value(key: str, choices: tuple[str, ...], default: str) -> tuple[int, str]:
        lineno, words = seen.get(key, (0, [default]))
        v = words[0].lower()
        if v not in choices:
            raise PluginError(f"{file}:{lineno}: {key}: {words[0]!r} is not one of "
                              f"{', '.join(choices)}")
        return lineno, v

    _, active = value("active", ("yes", "no"), "no")
    dline, direction = value("direction", ("out", "in"), "out")
    if direction == "in":
        raise PluginError(f"{file}:{dline}: direction: inbound plugins are not supported "
                          "(nor by auditd): direction = out")
    tline, kind = value("type", ("always", "builtin"), "always")
    fline, fmt = value("format", ("string", "binary"), "string")
    pline, pwords = seen.get("path", (0, []))
    path = pwords[0] if pwords else ""
    args = tuple(seen.get("args", (0, []))[1])
    if active == "no":
        return PluginConf(file, False, path, args)
    if not path:
        raise PluginError(f"{file}: path: an active plugin needs `path = /its/program`")
    if path.lower().startswith("builtin_") or kind == "builtin":
        line = pline if path.lower().startswith("builtin_") else tline
        raise PluginError(f"{file}:{line}: {'path' if line == pline else 'type'}: auditd's "
                          f"built-in plugins ({path}) are not supported: audtrace runs none "
                          "of its own (audit 3.1 and later run /sbin/audisp-af_unix as a "
                          "plugin with type = always)")
    if fmt == "binary":
        raise PluginError(f"{file}:{fline}: format: binary (auditd's in-memory structs) is "
                          "not supported: format = string")
    _check_program(f"{file}:{pline}: path", path)
    return PluginConf(file, True, path, args)


def _check_program(where: str, path: str) -> None:
    if not os.path.isabs(path):
        raise PluginError(f"{where}: {path!r} is not an absolute path")
    try:
        st = os.stat(path)
    except OSError as e:
        raise PluginError(f"{where}: {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PluginError(f"{where}: {path}: not a regular file")
    bad = _owned_safely(st)
    if bad:
        raise PluginError(f"{where}: {path}: {bad}")
    need = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP
    if st.st_mode & need != need:
        raise PluginError(f"{where}: {path}: mode {stat.S_IMODE(st.st_mode):04o}: auditd "
                          "wants at least 0550")


def read_dir(path: str) -> list[PluginConf]:
    """Every plugin file of the directory, in name order."""
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise PluginError(f"{path}: plugin directory: {e.strerror}") from None
    return [read_conf(os.path.join(path, n)) for n in names
            if n.endswith(".conf") and not n.startswith(".") and n.count(".") == 1]


# ---- events ---------------------------------------------------------------------------------

def _stamp(line: bytes) -> bytes | None:
    i = line.find(b"msg=audit(")
    if i < 0:
        return None
    j = line.find(b")", i)
    return line[i + 10:j] if j > 0 else None


def _event(lines: list[bytes], stamp: bytes | None) -> bytes:
    text = b"\n".join(lines) + b"\n"
    first = lines[0]
    at = first.find(b" type=") + 1 if first.startswith(b"node=") else 0
    if stamp is not None and (len(lines) > 1 or first.startswith(b"type=SYSCALL ", at)):
        text += first[:at] + b"type=EOE msg=audit(" + stamp + b"): \n"
    return text


def split_events(lines: bytes) -> list[bytes]:
    """RAW text as whole events (consecutive lines of one time stamp and serial), each with
    the EOE record a plugin of auditd gets after a syscall's or a multi-record event."""
    out: list[bytes] = []
    group: list[bytes] = []
    stamp: bytes | None = None
    for line in lines.split(b"\n"):
        if not line:
            continue
        s = _stamp(line)
        if group and s != stamp:
            out.append(_event(group, stamp))
            group = []
        group.append(line)
        stamp = s
    if group:
        out.append(_event(group, stamp))
    return out


# ---- running --------------------------------------------------------------------------------

@dataclass(eq=False)
class _Plugin:
    conf: PluginConf
    proc: subprocess.Popen | None = None
    rfd: int = -1                 # the pipe's read end, kept to count what is unread
    wfd: int = -1
    queue: deque[bytes] = field(default_factory=deque)
    head: int = 0                 # bytes of queue[0] already in the pipe
    sent: int = 0                 # bytes written into this pipe
    ends: deque[int] = field(default_factory=deque)   # in `sent`, where written events end
    restarts: int = 0
    missed: int = 0
    given_up: bool = False

    @property
    def label(self) -> str:
        return f"{self.conf.name} ({self.conf.path})"

    def unread(self) -> int:
        """Events written whole that the plugin has not read to their end."""
        buf = array.array("i", [0])
        fcntl.ioctl(self.rfd, termios.FIONREAD, buf)
        read_to = self.sent - buf[0]
        while self.ends and self.ends[0] <= read_to:
            self.ends.popleft()
        return len(self.ends)

    def close_pipe(self) -> None:
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.rfd = self.wfd = -1


def _key(c: PluginConf) -> tuple[str, str, tuple[str, ...]]:
    """What makes a plugin the same one across a reload."""
    return c.file, c.path, c.args


def _status(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


class Plugins:
    """The active plugins of one directory; see the module's text."""

    def __init__(self, confs: list[PluginConf], max_restarts: int,
                 notice: Callable[[str], None], q_depth: int = DEFAULT_Q_DEPTH) -> None:
        self.max_restarts = max_restarts
        self.notice = notice
        self.q_depth = max(1, q_depth)
        self._plugins = [_Plugin(c) for c in confs if c.active]
        self._started = self._closed = False
        self._gone_missed = 0           # misses of plugins a reload ended

    @classmethod
    def from_dir(cls, path: str, max_restarts: int, notice: Callable[[str], None],
                 q_depth: int = DEFAULT_Q_DEPTH) -> Plugins:
        return cls(read_dir(path), max_restarts, notice, q_depth)

    def __len__(self) -> int:
        return len(self._plugins)

    def names(self) -> list[str]:
        return [p.conf.name for p in self._plugins]

    def __enter__(self) -> Plugins:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _spawn(self, p: _Plugin) -> None:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):  # over a user's pipe-max-size: the default
                fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            os.set_blocking(wfd, False)
            p.proc = subprocess.Popen(
                [p.conf.path, *p.conf.args], executable=p.conf.path, stdin=rfd,
                stdout=subprocess.DEVNULL, env={}, close_fds=True, restore_signals=True,
                start_new_session=True)
        except BaseException:
            os.close(rfd)
            os.close(wfd)
            raise
        p.rfd, p.wfd, p.head, p.sent = rfd, wfd, 0, 0
        p.ends.clear()

    def start(self) -> None:
        """Start every active plugin; PluginError if one cannot be run (close() stops the
        others)."""
        self._started = True
        for p in self._plugins:
            try:
                self._spawn(p)
            except OSError as e:
                raise PluginError(f"{p.conf.file}: path: cannot run {p.conf.path}: "
                                  f"{e.strerror}") from None
            self._write(p)

    def _write(self, p: _Plugin) -> None:
        """As much of p's queue as its pipe takes now; never waits."""
        while p.queue and p.wfd >= 0:
            chunk = [p.queue[0][p.head:]]
            size = len(chunk[0])
            for ev in islice(p.queue, 1, None):
                if size >= WRITE_CHUNK:
                    break
                chunk.append(ev)
                size += len(ev)
            try:
                n = os.write(p.wfd, b"".join(chunk))
            except BlockingIOError:
                return
            p.sent += n
            left = p.head + n
            p.head = 0
            for _ in range(len(chunk)):
                if left < len(p.queue[0]):
                    p.head = left       # the rest of this event goes first next time
                    return
                left -= len(p.queue.popleft())
                p.ends.append(p.sent - left)

    def feed(self, lines: bytes) -> None:
        """Whole events' RAW lines, newline-terminated, to every plugin; never blocks."""
        if not self._plugins or self._closed:
            return
        events = split_events(lines)
        for p in self._plugins:
            if p.given_up:
                p.missed += len(events)
                continue
            p.queue.extend(events)
            self._write(p)
            while len(p.queue) > self.q_depth:      # the newest go, as auditd's full queue
                p.queue.pop()
                p.missed += 1

    def poll(self) -> None:
        """Reap and restart dead plugins, write what waits; never blocks."""
        if not self._started or self._closed:
            return
        for p in self._plugins:
            if p.given_up:
                continue
            if p.proc is None:          # a restart that could not exec: try again
                self._restart(p, "is not running")
                continue
            if p.proc.poll() is None:
                p.unread()              # forget what it has read
                self._write(p)
                continue
            lost = p.unread()
            p.missed += lost
            why = f"{_status(p.proc.returncode)}, {lost} events it had not read lost"
            p.close_pipe()
            p.proc = None
            p.head = 0                  # the event it was given in part goes whole to the next
            self._restart(p, why)

    def _restart(self, p: _Plugin, why: str) -> None:
        if p.restarts >= self.max_restarts:
            p.given_up = True
            p.missed += len(p.queue)
            p.queue.clear()
            self.notice(f"plugin {p.label} {why}; not restarted: max_restarts "
                        f"({self.max_restarts}) reached, the events it misses are counted lost")
            return
        p.restarts += 1
        try:
            self._spawn(p)
        except OSError as e:
            self.notice(f"plugin {p.label} {why}; restart {p.restarts} of {self.max_restarts} "
                        f"failed: {e.strerror}")
            return
        self.notice(f"plugin {p.label} {why}; restarted ({p.restarts} of max_restarts "
                    f"{self.max_restarts})")
        self._write(p)

    def reload(self, path: str | None = None) -> None:
        """auditd's reconfiguration. Without `path`: SIGHUP to every running plugin. With the
        plugin directory, read anew (a PluginError leaves every plugin as it was): a plugin
        whose file is unchanged (same file, program and args) gets SIGHUP and keeps its
        restarts and queue; one removed, made inactive or changed is ended as close() ends
        it (waiting as close() waits), what it had not read counted; a new or changed one is
        started (one that cannot run is a notice, and every event it misses is counted)."""
        if path is None:
            for p in self._plugins:
                if p.proc is not None and p.proc.poll() is None:
                    p.proc.send_signal(signal.SIGHUP)
            return
        confs = [c for c in read_dir(path) if c.active]
        old = {_key(p.conf): p for p in self._plugins}
        wanted = {_key(c) for c in confs}
        going = [p for k, p in old.items() if k not in wanted]
        if self._started and not self._closed:
            self._end(going, "at reload")
        self._gone_missed += sum(p.missed for p in going)
        self._plugins = [old.get(_key(c)) or _Plugin(c) for c in confs]
        if not self._started or self._closed:
            return
        for p in self._plugins:
            if _key(p.conf) in old:
                if p.proc is not None and p.proc.poll() is None:
                    p.proc.send_signal(signal.SIGHUP)
                continue
            try:
                self._spawn(p)
            except OSError as e:
                p.given_up = True
                self.notice(f"plugin {p.label}: cannot run it: {e.strerror}; the events it "
                            "misses are counted lost")

    def backlog(self) -> int:
        """Events waiting for plugins: queued, or in a pipe and not yet read."""
        return sum(len(p.queue) + (p.unread() if p.rfd >= 0 else 0) for p in self._plugins)

    def lost(self) -> int:
        """Events plugins missed so far, each plugin's misses counted (those a reload
        ended included)."""
        return self._gone_missed + sum(p.missed for p in self._plugins)

    def close(self) -> None:
        """Write what is queued, end the plugins, count what they did not read. Idempotent,
        bounded in time (about 9 s at worst)."""
        if self._closed:
            return
        self._closed = True
        self._end(self._plugins, "at the end")

    def _end(self, plugins: list[_Plugin], when: str) -> None:
        running = [p for p in plugins if p.proc is not None]
        deadline = time.monotonic() + CLOSE_FLUSH_S
        while True:
            waiting = [p for p in running if p.queue and p.proc.poll() is None]
            if not waiting or time.monotonic() >= deadline:
                break
            for p in waiting:
                self._write(p)
            time.sleep(0.01)
        for p in running:
            os.close(p.wfd)             # EOF: a plugin ends once it has read the rest
            p.wfd = -1
        self._wait(running, CLOSE_EOF_S, signal.SIGTERM)
        self._wait(running, CLOSE_TERM_S, signal.SIGKILL)
        self._wait(running, None, None)
        for p in plugins:
            lost = len(p.queue) + (p.unread() if p.rfd >= 0 else 0)
            p.missed += lost
            p.queue.clear()
            p.close_pipe()
            p.proc = None
            if lost:
                self.notice(f"plugin {p.label}: {lost} events it had not read lost {when}")

    @staticmethod
    def _wait(ps: list[_Plugin], timeout: float | None, then: signal.Signals | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for p in ps:
            assert p.proc is not None
            try:
                p.proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if then is not None:
                    p.proc.send_signal(then)
