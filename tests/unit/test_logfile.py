"""The log writer: whole events only, whatever the disk does; its actions and rotation.

A small disk is simulated by the functions LogFile takes from the system (reserve, write,
statvfs): the file is real, only the disk's answers are made up. The real thing, a full
tmpfs under a signal storm, is tests/integration/test_disk_full.py.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from audtrace.compat.record import parse_line
from audtrace.tracer.log_policy import Action, Policy, Space
from audtrace.tracer.logfile import LogFile, reserve, rotation_renames, whole

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EIO = OSError(errno.EIO, os.strerror(errno.EIO))


def event(serial: int, pad: int = 40) -> bytes:
    """Two records of one event, as the raw format writes them (no final newline)."""
    return (f"type=SYSCALL msg=audit(1700000000.000:{serial}): x={'a' * pad}\n"
            f"type=PROCTITLE msg=audit(1700000000.000:{serial}): proctitle=6B696C6C").encode()


def batch(first: int, n: int, pad: int | None = None) -> list[bytes]:
    """Events of sizes that vary from one to the next, or all of one size."""
    return [event(s, 20 + (s * 7) % 60 if pad is None else pad) for s in range(first, first + n)]


def serials(path: Path) -> list[int]:
    """Every line parsed as an audit record; the serials of the events, in file order."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the log ends inside a line"
    out = []
    for line in data.decode().splitlines():
        _node, _type, _sec, _msec, serial, _body = parse_line(line)
        if not out or out[-1] != serial:
            out.append(serial)
    return out


class Disk:
    """A disk of `room` bytes for the files of one directory: reserve() fails as fallocate
    does when they would not fit; `fail` makes write() fail (after `short` bytes)."""

    def __init__(self, directory: Path, room: int) -> None:
        self.dir, self.room = directory, room
        self.fail: OSError | None = None
        self.short = 0
        self.reserves = 0

    def used(self, fd: int) -> int:
        cur = os.fstat(fd).st_ino
        return sum(p.stat().st_size for p in self.dir.iterdir()
                   if p.is_file() and p.stat().st_ino != cur)

    def reserve(self, fd: int, offset: int, length: int) -> None:
        self.reserves += 1
        if self.used(fd) + offset + length > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, fd: int, data) -> int:
        if self.fail is not None:
            if self.short:
                n = os.write(fd, bytes(data[:self.short]))
                self.short = 0
                return n
            raise self.fail
        return os.write(fd, data)


def log(tmp_path: Path, room: int = 1 << 30, policy: Policy | None = None, **kw):
    disk = Disk(tmp_path, room)
    notes: list[str] = []
    syslogged: list[str] = []
    lf = LogFile(str(tmp_path / "audit.log"), policy, notes.append, syslog=syslogged.append,
                 write=disk.write, reserve=disk.reserve, **kw)
    return lf, disk, notes, syslogged


def test_reserving_room_past_the_end_keeps_the_size(tmp_path) -> None:
    """The real fallocate, on the filesystem of the test's temporary files."""
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"0123456789")
        try:
            reserve(fd, 10, 1 << 20)
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                pytest.skip(f"no FALLOC_FL_KEEP_SIZE on {tmp_path}'s filesystem")
            raise
        st = os.fstat(fd)
        assert st.st_size == 10 and st.st_blocks * 512 >= 1 << 20
        os.ftruncate(fd, 10)                    # what gives an unused reservation back
        assert os.fstat(fd).st_blocks * 512 < 1 << 20
    finally:
        os.close(fd)


def test_whole_counts_the_events_a_short_write_kept() -> None:
    lines = [b"aa", b"bbb", b"c"]               # 3, 4 and 2 bytes with their newlines
    assert whole(lines, 0) == (0, 0)
    assert whole(lines, 6) == (1, 3)
    assert whole(lines, 7) == (2, 7)
    assert whole(lines, 9) == (3, 9)


def test_rotation_renames_oldest_first_and_keeps_num_logs_files() -> None:
    assert rotation_renames("a.log", 2) == [("a.log", "a.log.1")]
    assert rotation_renames("a.log", 4) == [("a.log.2", "a.log.3"), ("a.log.1", "a.log.2"),
                                            ("a.log", "a.log.1")]


def test_a_batch_that_does_not_fit_leaves_the_longest_run_of_whole_events(tmp_path) -> None:
    lf, disk, notes, _ = log(tmp_path, room=2000)
    written = [lf.append(batch(first, 40, pad=50)) for first in range(1, 400, 40)]
    path = tmp_path / "audit.log"
    assert written[0] > 0 and not any(written[1:])
    assert serials(path) == list(range(1, written[0] + 1))
    size = path.stat().st_size
    assert size <= 2000 < size + len(event(0, 50)) + 1      # the next event had no room
    assert disk.reserves <= 10 + 2 * 9      # a few tries at the edge, two a batch after
    assert lf.trouble == "full"
    assert len(notes) == 1 and "No space left on device" in notes[0] and "ignore" in notes[0]


def test_when_room_comes_back_writing_goes_on_and_says_so(tmp_path) -> None:
    lf, disk, notes, _ = log(tmp_path, room=1000)
    n = lf.append(batch(1, 50))
    assert 0 < n < 50
    assert lf.append(batch(51, 10)) == 0
    disk.room = 1 << 20
    assert lf.append(batch(61, 10)) == 10
    assert serials(tmp_path / "audit.log") == [*range(1, n + 1), *range(61, 71)]
    assert lf.trouble is None and notes[-1].endswith("writing again")


def test_a_short_write_is_cut_back_to_the_last_whole_event(tmp_path) -> None:
    """No reservation here (as on NFS): the write itself comes up short, then fails."""
    lf, disk, notes, _ = log(tmp_path)
    lf.reservable = False
    assert lf.append(batch(1, 3)) == 3
    before = (tmp_path / "audit.log").stat().st_size
    lines = batch(4, 5)
    disk.fail, disk.short = ENOSPC, len(lines[0]) + 1 + len(lines[1]) // 2
    assert lf.append(lines) == 1
    assert serials(tmp_path / "audit.log") == [1, 2, 3, 4]
    assert (tmp_path / "audit.log").stat().st_size == before + len(lines[0]) + 1
    assert lf.size == (tmp_path / "audit.log").stat().st_size


def test_an_unsupported_reservation_falls_back_to_writing_and_cutting(tmp_path) -> None:
    def no_fallocate(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    lf = LogFile(str(tmp_path / "audit.log"), reserve=no_fallocate, notice=lambda _m: None)
    assert lf.append(batch(1, 4)) == 4 and not lf.reservable
    assert serials(tmp_path / "audit.log") == [1, 2, 3, 4]


def test_disk_errors_syslog_at_most_five_times_in_a_row(tmp_path) -> None:
    policy = Policy(disk_error_action=Action("syslog", "disk_error_action"))
    lf, disk, notes, syslogged = log(tmp_path, policy=policy)
    disk.fail = EIO
    for i in range(8):
        assert lf.append(batch(i, 2)) == 0
    assert len(syslogged) == 5 and "Input/output error" in syslogged[0]
    assert len(notes) == 1 and lf.trouble == "error"
    disk.fail = None
    assert lf.append(batch(9, 2)) == 2
    assert syslogged[-1].endswith("writing again")


def test_ignore_does_not_syslog(tmp_path) -> None:
    lf, disk, notes, syslogged = log(tmp_path)
    disk.fail = EIO
    assert lf.append(batch(1, 2)) == 0
    assert syslogged == [] and "disk-error action ignore" in notes[0]


def test_suspend_writes_nothing_until_resumed_even_with_room(tmp_path) -> None:
    policy = Policy(disk_full_action=Action("suspend", "disk_full_action"))
    lf, disk, notes, _ = log(tmp_path, room=600, policy=policy)
    n = lf.append(batch(1, 20))
    assert lf.suspended and "SIGUSR2" in notes[-1]
    disk.room = 1 << 20
    assert lf.append(batch(21, 5)) == 0             # room again, yet suspended (auditd's)
    lf.request_resume()                             # what the SIGUSR2 handler does
    assert lf.append(batch(26, 5)) == 5
    assert serials(tmp_path / "audit.log") == [*range(1, n + 1), *range(26, 31)]
    assert notes[-1].endswith("writing resumed")


def test_stop_says_why_and_writes_nothing_more(tmp_path) -> None:
    policy = Policy(disk_full_action=Action("stop", "disk_full_action"))
    lf, disk, _notes, _ = log(tmp_path, room=600, policy=policy)
    lf.append(batch(1, 20))
    assert lf.stopped is not None and "No space left on device" in lf.stopped
    assert "stop" in lf.stopped and "\n" not in lf.stopped
    disk.room = 1 << 20
    lf.request_resume()                             # a stopped log stays stopped
    assert lf.append(batch(21, 5)) == 0


def test_exec_closes_the_log_runs_the_program_and_resume_reopens_it(tmp_path) -> None:
    ran: list[str] = []

    class Child:                            # the program, still running
        def poll(self) -> None:
            return None

    policy = Policy(disk_full_action=Action("exec", "disk_full_action", "/usr/local/bin/x"))
    lf, disk, notes, _ = log(tmp_path, room=600, policy=policy,
                             spawn=lambda path: ran.append(path) or Child())
    lf.append(batch(1, 20))
    assert ran == ["/usr/local/bin/x"] and lf.fd == -1 and lf.suspended
    (tmp_path / "audit.log").rename(tmp_path / "archived.log")     # what such a program does
    disk.room = 1 << 20
    lf.request_resume()
    assert lf.append(batch(21, 3)) == 3
    assert serials(tmp_path / "audit.log") == [21, 22, 23]


def test_rotation_by_size_between_events_keeps_num_logs_files(tmp_path) -> None:
    policy = Policy(max_log_file=1500, num_logs=3)
    lf, _disk, _notes, _ = log(tmp_path, policy=policy)
    for first in range(1, 200, 25):
        assert lf.append(batch(first, 25)) == 25
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.log", "audit.log.1", "audit.log.2"]
    old, older = tmp_path / "audit.log.1", tmp_path / "audit.log.2"
    got = [serials(older), serials(old), serials(tmp_path / "audit.log")]
    flat = [s for part in got for s in part]
    assert flat == list(range(flat[0], 201))          # in order, nothing missing in between
    for p in (older, old):
        size = p.stat().st_size
        last = p.read_bytes().rstrip(b"\n").rsplit(b"\n", 2)
        assert 1500 <= size < 1500 + len(b"\n".join(last[-2:])) + 1   # the limit's event last
        assert stat.S_IMODE(p.stat().st_mode) == 0o400                  # auditd's: read-only
    assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o600


def test_keep_logs_never_deletes(tmp_path) -> None:
    policy = Policy(max_log_file=1000,
                    max_log_file_action=Action("keep_logs", "max_log_file_action"))
    lf, _disk, _notes, _ = log(tmp_path, policy=policy)
    for first in range(1, 200, 20):
        lf.append(batch(first, 20))
    n = len(list(tmp_path.iterdir()))
    assert n > 5
    files = [tmp_path / f"audit.log.{i}" for i in range(n - 1, 0, -1)] + [tmp_path / "audit.log"]
    flat = [s for p in files for s in serials(p)]
    assert flat == list(range(1, 201))


def test_excess_rotated_logs_go_at_start_as_auditd(tmp_path) -> None:
    for i in (1, 2, 3, 4):
        (tmp_path / f"audit.log.{i}").write_text("")
    log(tmp_path, policy=Policy(max_log_file=1 << 20, num_logs=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1",
                                                          "audit.log.2"]


def test_disk_full_rotate_frees_the_oldest_and_writes_on(tmp_path) -> None:
    """num_logs 2: the disk holds log.1 and log; each rotation frees the old log.1."""
    policy = Policy(disk_full_action=Action("rotate", "disk_full_action"), num_logs=2)
    lf, _disk, notes, _ = log(tmp_path, room=3000, policy=policy)
    written = [lf.append(batch(first, 10, pad=50)) for first in range(1, 200, 10)]
    assert written == [10] * 20, "every batch went in, into a rotated log if need be"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1"]
    flat = serials(tmp_path / "audit.log.1") + serials(tmp_path / "audit.log")
    assert flat == list(range(flat[0], 201))
    assert lf.rotated_files > 1 and any("rotating the log" in n for n in notes)


def test_size_limit_suspend(tmp_path) -> None:
    policy = Policy(max_log_file=1000,
                    max_log_file_action=Action("suspend", "max_log_file_action"))
    lf, _disk, notes, _ = log(tmp_path, policy=policy)
    n = lf.append(batch(1, 30))
    assert 0 < n < 30 and lf.suspended
    assert (tmp_path / "audit.log").stat().st_size >= 1000


class Statvfs:
    def __init__(self, free: int) -> None:
        self.f_frsize, self.f_blocks, self.f_bavail = 4096, 25600, free // 4096  # 100 MiB


def test_space_left_acts_once_while_below_and_again_after_coming_back(tmp_path) -> None:
    free = [50 << 20]
    policy = Policy(space_left=Space(75), space_left_action=Action("syslog", "space_left_action"),
                    admin_space_left=Space(10, percent=True),
                    admin_space_left_action=Action("suspend", "admin_space_left_action"))
    lf, _disk, notes, syslogged = log(tmp_path, policy=policy,
                                      statvfs=lambda _fd: Statvfs(free[0]))
    assert len(syslogged) == 1 and "below space_left 75 MiB" in syslogged[0]  # at open
    lf.append(batch(1, 2))
    assert len(syslogged) == 1
    free[0] = 90 << 20
    lf.append(batch(3, 2))
    free[0] = 60 << 20
    lf.append(batch(5, 2))
    assert len(syslogged) == 2                       # above, then below again
    free[0] = 8 << 20                                # below 10% of 100 MiB
    assert lf.append(batch(7, 2)) == 2               # this batch is written, then suspended
    assert lf.suspended and "admin_space_left 10%" in notes[-1]
    assert lf.append(batch(9, 2)) == 0


def test_a_log_renamed_by_another_program_is_written_on_until_reopened(tmp_path) -> None:
    """logrotate's way: it renames the log, then signals; the events written between the
    two go on into the renamed file, whole, and the reopened log starts empty at the path,
    0600 whatever mode the program that made it gave it."""
    lf, _disk, _notes, _ = log(tmp_path)
    path = tmp_path / "audit.log"
    assert lf.append(batch(1, 3)) == 3
    assert not lf.moved()
    os.rename(path, tmp_path / "audit.log.1")
    assert lf.moved()
    assert lf.append(batch(4, 2)) == 2                  # before the signal
    assert lf.reopen() and not lf.moved()
    assert lf.append(batch(6, 1)) == 1
    assert serials(tmp_path / "audit.log.1") == [1, 2, 3, 4, 5]
    assert serials(path) == [6]
    assert stat.S_IMODE((tmp_path / "audit.log.1").stat().st_mode) == 0o400
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # logrotate's `create 0644` made the new file: the configured mode is put back
    os.rename(path, tmp_path / "audit.log.2")
    path.touch(mode=0o644)
    assert lf.moved() and lf.reopen()
    assert lf.append(batch(7, 1)) == 1
    assert serials(path) == [7] and stat.S_IMODE(path.stat().st_mode) == 0o600
    lf.close()


def test_a_log_in_place_is_not_moved(tmp_path) -> None:
    lf, _disk, _notes, _ = log(tmp_path)
    lf.append(batch(1, 1))
    (tmp_path / "audit.log").unlink()
    assert lf.moved()                                   # removed counts as moved away
    lf.close()
    assert not lf.moved()                               # nothing open: nothing to say
