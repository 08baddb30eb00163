"""An audit log file that only ever holds whole events, and auditd's actions when the disk
says no: full, failing, low on space, or the file at its size limit (tracer/log_policy.py).

Whole events: before a batch is written, its room past the end of the file is reserved with
fallocate(FALLOC_FL_KEEP_SIZE) (tmpfs, ext4, xfs and btrfs take it; the size does not
change), after which "writes into the range ... are guaranteed not to fail because of lack of
disk space" (fallocate(2)): the write cannot run out of space half-way, and a reader
following the log (ausearch, laurel, a log shipper) never sees part of a line. When the
whole batch does not fit, the longest run of whole events that does is written. Where
reservation is not supported, or a write still comes up short (an I/O error), the file is
cut back to the end of the last whole event. A failed reservation is given back too: ext4
keeps the blocks it found before running out.

One writer per log, as auditd: the cut-backs assume nobody else appends meanwhile.
Rotation happens between events, never inside one: `log` -> `log.1` ... `log.N-1`, higher
numbers older, as auditd and logrotate name them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import subprocess
import sys
import syslog
import threading
from collections.abc import Callable, Sequence

from audtrace.tracer.log_policy import MIB, Action, Policy

FULL = {errno.ENOSPC, errno.EDQUOT}     # no room (for us): the disk-full action
# fallocate cannot reserve here (NFS, some FUSE, old kernels): write and cut back instead
UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.ESPIPE}
FALLOC_FL_KEEP_SIZE = 1
SYSLOG_ERRORS = 5                       # auditd: at most 5 consecutive disk-error warnings

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate [offset, offset+length) without changing the file's size; OSError if not.
    A signal arriving meanwhile (tmpfs gives up with EINTR) is no answer: again."""
    while _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def ends(lines: Sequence[bytes]) -> list[int]:
    """Where each event's text ends in the written data (after its newline)."""
    out, at = [], 0
    for line in lines:
        at += len(line) + 1
        out.append(at)
    return out


def whole(lines: Sequence[bytes], written: int) -> tuple[int, int]:
    """Of `written` bytes of `lines`: how many events are whole, and the bytes they take."""
    count = at = 0
    for line in lines:
        if at + len(line) + 1 > written:
            break
        at += len(line) + 1
        count += 1
    return count, at


def rotation_renames(path: str, num_logs: int) -> list[tuple[str, str]]:
    """auditd's rotation: oldest first, `log.N-2` -> `log.N-1` ... `log` -> `log.1`,
    so `log.N-1` (the oldest) is replaced and N files remain, the new `log` included."""
    out = [(f"{path}.{i - 1}", f"{path}.{i}") for i in range(num_logs - 1, 1, -1)]
    return out + [(path, f"{path}.1")]


def _syslog(msg: str) -> None:
    syslog.openlog("audtrace", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_ALERT, msg)


def _spawn(path: str) -> subprocess.Popen:
    """Run an exec action's program as auditd does: no arguments, an empty environment,
    signals at their defaults; not waited for. It is audtrace's child: `kill -USR2 $PPID`
    resumes writing."""
    return subprocess.Popen([path], env={}, stdin=subprocess.DEVNULL, close_fds=True,
                            restore_signals=True)


def _stderr(msg: str) -> None:
    print(f"audtrace: {msg}", file=sys.stderr, flush=True)


class LogFile:
    """Appends whole events to `path` and carries out `policy`. `append` returns how many
    events it wrote, always the first ones of the batch; the caller counts the rest lost.
    The functions after `*` are the system's, replaced by tests."""

    def __init__(self, path: str, policy: Policy | None = None,
                 notice: Callable[[str], None] | None = None, *,
                 syslog: Callable[[str], None] = _syslog,
                 spawn: Callable[[str], subprocess.Popen] = _spawn,
                 write: Callable[[int, bytes], int] = os.write,
                 reserve: Callable[[int, int, int], None] = reserve,
                 statvfs: Callable[[int], os.statvfs_result] = os.fstatvfs) -> None:
        self.path = path
        self.policy = policy if policy is not None else Policy()
        self.notice, self._syslog, self._spawn = notice or _stderr, syslog, spawn
        self._write, self._reserve, self._statvfs = write, reserve, statvfs
        self.fd = -1
        self.size = 0                   # where the next event goes
        self.regular = self.reservable = False
        self.suspended = False          # auditd's: until resume() (SIGUSR2), nothing written
        self.stopped: str | None = None  # the stop action's line: the run is to end
        self.trouble: str | None = None  # "full" or "error" while writes fail
        self.closed = False
        self.rotated_files = 0
        self._error_warnings = 0
        self._space_warned = {"space_left_action": False, "admin_space_left_action": False}
        self._size_warned = False
        self._resume_asked = False
        self._made_room = False
        self._rotating = False
        self._since_flush = 0
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()   # the fd, against the asynchronous flush
        self._flusher: _Flusher | None = None
        self._open()
        p = self.policy
        if p.max_log_file and p.max_log_file_action.name == "rotate":
            self._remove_excess()
        if p.max_log_file and self.size >= p.max_log_file:
            self._size_action()
        if self.policy.flush == "incremental_async":
            self._flusher = _Flusher(self)
        if self.policy.watches_space:
            self._check_space()

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        """Open (create) the log; OSError as the system says."""
        p = self.policy
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        flags |= {"data": os.O_DSYNC, "sync": os.O_SYNC}.get(p.flush, 0)
        mode = 0o600 if p.group is None else 0o640
        fd = os.open(self.path, flags, mode)
        try:
            # some files open for writing yet refuse every write (/proc/version)
            os.write(fd, b"")
            st = os.fstat(fd)
            if p.group is not None:
                # auditd's ownership: the group may read the current log
                os.fchown(fd, -1, p.group)
                os.fchmod(fd, mode)
        except OSError:
            os.close(fd)
            raise
        with self._lock:
            self.fd = fd
        self.regular = self.reservable = stat.S_ISREG(st.st_mode)
        self.size = st.st_size if self.regular else 0
        self._size_warned = False

    def _close_fd(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as e:
                self.notice(f"{self.path}: closing: {e.strerror}")

    def _remove_excess(self) -> None:
        """auditd at start-up: rotated logs past num_logs go, so the disk keeps room."""
        i = self.policy.num_logs
        while True:
            name = f"{self.path}.{i}"
            try:
                os.unlink(name)
            except OSError:
                return
            self.notice(f"{name} removed: more logs than num_logs {self.policy.num_logs}")
            i += 1

    # -- writing ---------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self.fd >= 0 and not self.suspended and self.stopped is None

    def append(self, lines: list[bytes]) -> int:
        """Append the events, each one's text without its final newline, in order. Returns
        how many were written: the first ones, each whole."""
        if self._resume_asked:
            self.resume()
        if self._children:
            self._children = [c for c in self._children if c.poll() is None]
        self._made_room = False
        done, tries = 0, 0
        while done < len(lines) and self.writable:
            end = self._size_cut(lines, done)
            chunk = lines[done:end]
            n = self._write_whole(chunk)
            done += n
            if n < len(chunk):
                # the disk-full action rotated: again, while rotations free the oldest logs
                if self._made_room and tries < self.policy.num_logs:
                    self._made_room, tries = False, tries + 1
                    continue
                break
            if self.policy.max_log_file and self.size >= self.policy.max_log_file:
                self._size_action()
        if done:
            self._flush(done)
            if self.policy.watches_space:
                self._check_space()
        return done

    def _write_whole(self, lines: list[bytes]) -> int:
        """Write the events, or the longest run of them that fits, and nothing partial."""
        data = b"\n".join(lines) + b"\n"
        count, err = len(lines), None
        if self.reservable:
            try:
                self._reserve(self.fd, self.size, len(data))
            except OSError as e:
                if e.errno in UNSUPPORTED:
                    self.reservable = False
                else:
                    self._release()
                    count = self._fitting(lines) if e.errno in FULL else 0
                    if count == 0:
                        self._trouble(e)
                        return 0
                    if count < len(lines):
                        err = e
                        data = b"\n".join(lines[:count]) + b"\n"
        written, write_err = self._write_all(data)
        if written == len(data):
            self.size = (os.lseek(self.fd, 0, os.SEEK_CUR) if self.regular
                         else self.size + written)
            if err is None:
                self._ok()
            else:
                self._trouble(err)          # the batch's tail did not fit
            return count
        # short: back to the end of the last whole event
        kept, at = whole(lines[:count], written)
        if self.regular:
            start = os.lseek(self.fd, 0, os.SEEK_CUR) - written
            self._cut(start + at)
            self.size = start + at
        self._trouble(write_err or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return kept

    def _write_all(self, data: bytes) -> tuple[int, OSError | None]:
        view, done = memoryview(data), 0
        while done < len(data):
            try:
                n = self._write(self.fd, view[done:])
            except OSError as e:
                return done, e
            if n <= 0:
                return done, None
            done += n
        return done, None

    def _fitting(self, lines: list[bytes]) -> int:
        """How many events (from the first) there is room for: reserved, once found.
        Runs only at the edge of a full disk, a few reservations long."""
        at = ends(lines)

        def fits(k: int) -> bool:
            try:
                self._reserve(self.fd, self.size, at[k - 1])
            except OSError:
                self._release()
                return False
            return True

        if not fits(1):
            return 0
        lo, hi = 1, len(lines) - 1          # the whole batch did not fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        # a failed try cuts back every reservation past the end: make this one again
        return lo if fits(lo) else 0

    def _release(self) -> None:
        """Give back what a failed reservation took (ext4 keeps the blocks it found)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END))

    def _cut(self, length: int) -> None:
        try:
            os.ftruncate(self.fd, length)
        except OSError as e:
            self.notice(f"{self.path}: cannot cut a partial event off: {e.strerror}")

    def _size_cut(self, lines: list[bytes], start: int) -> int:
        """Where the batch reaches the size limit, when reaching it rotates or suspends:
        the event that reaches it is the file's last."""
        p = self.policy
        if not p.max_log_file or p.max_log_file_action.name in ("ignore", "syslog") \
                or self.size >= p.max_log_file:
            return len(lines)
        room, at = p.max_log_file - self.size, 0
        for i in range(start, len(lines)):
            at += len(lines[i]) + 1
            if at >= room:
                return i + 1
        return len(lines)

    def _flush(self, events: int) -> None:
        p = self.policy
        if not p.flush.startswith("incremental"):
            return
        self._since_flush += events
        if self._since_flush < p.freq:
            return
        self._since_flush = 0
        if self._flusher is not None:
            self._flusher.kick()
            return
        try:
            os.fsync(self.fd)
        except OSError as e:
            self._trouble(e, "fsync")

    # -- trouble and its actions -------------------------------------------------------------
    def _ok(self) -> None:
        """A write went through: an episode of failed writes, if any, is over."""
        self._error_warnings = 0
        if self.trouble is None:
            return
        p = self.policy
        action = p.disk_full_action if self.trouble == "full" else p.disk_error_action
        self.trouble = None
        self.notice(f"{self.path}: writing again")
        if action.name == "syslog":
            self._syslog(f"{self.path}: writing again")

    def _trouble(self, err: OSError, doing: str = "write") -> None:
        """A write failed: the disk-full or disk-error action, once per episode (auditd:
        a syslog action warns up to 5 consecutive times)."""
        kind = "full" if err.errno in FULL else "error"
        action = (self.policy.disk_full_action if kind == "full"
                  else self.policy.disk_error_action)
        reason = f"{self.path}: {doing}: {err.strerror}"
        if self.trouble == kind:
            if action.name == "rotate":     # auditd: rotate acts every time, losing the oldest
                self._made_room = self.rotate()
            elif action.name == "syslog" and self._error_warnings < SYSLOG_ERRORS:
                self._error_warnings += 1
                self._syslog(reason)
            return
        self.trouble = kind
        self._error_warnings = 1
        self._act(action, reason)

    def _act(self, action: Action, reason: str) -> None:
        name = action.name
        if name in ("ignore", "syslog"):
            self.notice(f"{reason}; events not written are counted as lost ({action})")
            if name == "syslog":
                self._syslog(reason)
        elif name == "suspend":
            self.suspended = True
            self.notice(f"{reason}; writing suspended until audtrace gets SIGUSR2, events"
                        f" counted as lost meanwhile ({action})")
        elif name in ("rotate", "keep_logs"):
            if self._rotating:          # the rotation itself failed: no second one inside
                self.notice(reason)
                return
            self.notice(f"{reason}; rotating the log ({action})")
            self._made_room = self.rotate(keep=name == "keep_logs")
        elif name == "exec":
            # closed first, as auditd, in case the program moves or compresses the log
            self._close_fd()
            self.suspended = True
            self.notice(f"{reason}; writing suspended, running {action.path} (SIGUSR2 to"
                        f" audtrace resumes; events counted as lost meanwhile)")
            try:
                self._children.append(self._spawn(action.path))
            except OSError as e:
                self.notice(f"cannot run {action.path}: {e.strerror}")
        elif name == "stop":
            self.stopped = f"{reason}; tracing stopped ({action})"

    def _size_action(self) -> None:
        action = self.policy.max_log_file_action
        reason = f"{self.path}: {self.size // MIB} MiB, at max_log_file"
        if action.name == "rotate":
            self.rotate()
        elif action.name == "keep_logs":
            self.rotate(keep=True)
        elif not self._size_warned:
            self._size_warned = True
            if action.name == "suspend":
                self._act(action, reason)
            elif action.name == "syslog":
                self._syslog(reason)

    def _check_space(self) -> None:
        """space_left, then admin_space_left, as auditd: each action once while below;
        ignore, syslog and rotate again once space has come back above."""
        p = self.policy
        try:
            st = self._statvfs(self.fd)
        except OSError:
            return
        free, fs_bytes = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        for limit, action in ((p.space_left, p.space_left_action),
                              (p.admin_space_left, p.admin_space_left_action)):
            if limit is None:
                continue
            warned = self._space_warned[action.setting]
            if free < limit.bytes(fs_bytes):
                if not warned:
                    self._space_warned[action.setting] = True
                    name = action.setting.removesuffix("_action")
                    self._act(action, f"{self.path}: {free // MIB} MiB left on its filesystem,"
                                      f" below {name} {limit}")
            elif warned and action.name in ("ignore", "syslog", "rotate"):
                self._space_warned[action.setting] = False

    # -- rotation and resumption ------------------------------------------------------------
    def rotate(self, keep: bool = False) -> bool:
        """auditd's rotate (num_logs files in all) or keep_logs (every log kept: the next
        free number), between events. False when there was nothing to rotate: an empty
        log and no oldest log to give up."""
        num = self.policy.num_logs
        if keep:
            num = 1
            while os.path.exists(f"{self.path}.{num}"):
                num += 1
            num += 1
        if num < 2 or (self.fd >= 0 and self.size == 0
                       and not os.path.exists(f"{self.path}.{num - 1}")):
            return False
        self._rotating = True
        try:
            self._rotate(num)
        finally:
            self._rotating = False
        return True

    def _rotate(self, num: int) -> None:
        if self.fd >= 0:
            ro = 0o400 if self.policy.group is None else 0o440
            with contextlib.suppress(OSError):
                os.fchmod(self.fd, ro)      # auditd: a rotated log is read-only
        self._close_fd()
        for old, new in rotation_renames(self.path, num):
            try:
                os.rename(old, new)
            except FileNotFoundError:
                pass
            except OSError as e:
                self._trouble(e, f"rotating {old} to {new}")
        try:
            self._open()
        except OSError as e:
            self.suspended = True
            self._trouble(e, "reopening after rotation")
            return
        self.rotated_files += 1

    def moved(self) -> bool:
        """Whether the log's path no longer names the file being written: another program
        (logrotate) renamed or removed it. The writes go on into that file meanwhile."""
        if self.fd < 0 or not self.regular:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            own = os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def reopen(self) -> bool:
        """After another program renamed the log (logrotate's rename, then its postrotate
        signal): the file written so far is made read-only as a rotated log and closed, and
        the log is opened at its path again, created when missing, with the configured mode
        and group whoever made it. Between two events, as a rotation. False if the new log
        cannot be opened: suspended then, as a failed rotation."""
        self._rotating = True
        try:
            if self.fd >= 0:
                ro = 0o400 if self.policy.group is None else 0o440
                with contextlib.suppress(OSError):
                    os.fchmod(self.fd, ro)
            self._close_fd()
            try:
                self._open()
                if self.regular:        # whoever made it (logrotate's `create`)
                    os.fchown(self.fd, -1, self.policy.group or 0)
                    os.fchmod(self.fd, 0o600 if self.policy.group is None else 0o640)
            except OSError as e:
                self.suspended = True
                self._trouble(e, "reopening after the log was moved")
                return False
        finally:
            self._rotating = False
        self.rotated_files += 1
        return True

    def request_resume(self) -> None:
        """From a signal handler: resume at the next append."""
        self._resume_asked = True

    def resume(self) -> None:
        """auditd's `resume`: writing again after suspend or exec, every warning reset;
        the log reopened (created) if an exec action's program moved it."""
        self._resume_asked = False
        if self.stopped is not None or self.closed:
            return
        changed = self.suspended or self.trouble is not None or self.fd < 0
        self.suspended = False
        self.trouble = None
        self._error_warnings = 0
        self._space_warned = dict.fromkeys(self._space_warned, False)
        self._size_warned = False
        if self.fd < 0:
            try:
                self._open()
            except OSError as e:
                self.notice(f"cannot reopen {self.path}: {e.strerror}")
                self.suspended = True
                return
        if changed:
            self.notice(f"{self.path}: writing resumed")

    def close(self) -> None:
        """Closed for good (again: nothing)."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        self.closed = True              # nothing more is written, nor reopened
        self._close_fd()


class _Flusher:
    """flush = incremental_async: fsync on a thread of its own, kicked every freq events."""

    def __init__(self, log: LogFile) -> None:
        self.log = log
        self.wake = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._run, name="audtrace-flush", daemon=True)
        self.thread.start()

    def kick(self) -> None:
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.done:
                return
            with self.log._lock:
                if self.log.fd >= 0:
                    try:
                        os.fsync(self.log.fd)
                    except OSError as e:
                        self.log.notice(f"{self.log.path}: fsync: {e.strerror}")

    def stop(self) -> None:
        self.done = True
        self.wake.set()
        self.thread.join(timeout=5)
