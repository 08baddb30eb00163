"""Pure logic of exec/exit/ioctl/clock/net records and their interpretation. What the
kernel writes is checked in tests/integration (test_exec, test_exit, ...); these pin the
rules those tests found, and the edges the kernel tests do not reach."""

from __future__ import annotations

import pytest
from audtrace.compat import ioctls
from audtrace.compat.interpret import interpret_value
from audtrace.compat.record import Event, Record, record_line
from audtrace.tracer import records as audit_records
from audtrace.tracer.ebpf.events import FileInfo
from audtrace.tracer.subcommands.clock import fmt_ns, rtc_text
from audtrace.tracer.subcommands.exec import split_argv


def fields(rec: Record) -> dict[str, str]:
    return dict(rec.fields)


def test_execve_short_args_quoted_or_hex():
    (rec,) = audit_records.execve_records([b"/bin/echo", b"a b", b'q"', b""])
    f = fields(rec)
    assert f["argc"] == "4" and f["a0"] == '"/bin/echo"' and f["a3"] == '""'
    assert f["a1"] == "612062" and f["a2"] == "7122"     # space and quote force hex
    assert list(f)[-1] == "src"


@pytest.mark.parametrize("size", [7400, 7500, 20000])
def test_execve_long_argument_is_split(size):
    """Past what fits one record the argument goes in pieces, aN[0] aN[1]...; from
    MAX_EXECVE_AUDIT_LEN on in hex, and aN_len counts the hex digits."""
    recs = audit_records.execve_records([b"x", b"y" * size])
    first = fields(recs[0])
    chunks = [v for r in recs for k, v in r.fields if k.startswith("a1[")]
    if size >= audit_records.MAX_EXECVE_AUDIT_LEN:
        assert first["a1_len"] == str(2 * size)
        assert bytes.fromhex("".join(chunks)) == b"y" * size
    else:
        assert first["a1_len"] == str(size)
        assert "".join(c.strip('"') for c in chunks) == "y" * size
    ev = Event(1, 0, 1, recs, "ebpf")
    assert all(len(record_line(ev, r)) < 8969 for r in recs)   # ausearch's line limit


def test_execve_argc_from_the_stack_wins():
    (rec,) = audit_records.execve_records([b"a"], argc=3)
    assert fields(rec)["argc"] == "3"


def test_split_argv():
    assert split_argv(b"ls\0-l\0", 2) == ([b"ls", b"-l"], False)
    assert split_argv(b"ls\0-l", 2) == ([b"ls", b"-l"], True)       # cut mid-argument
    assert split_argv(b"ls\0", 2) == ([b"ls"], True)


def test_path_record_shape():
    f = FileInfo(path=b"/dev/rtc0", ino=12, dev=(0 << 20) | 5, rdev=(252 << 20) | 0,
                 mode=0o20664, uid=0, gid=0)
    rec = audit_records.path_record(0, f.path, f)
    assert [k for k, _ in rec.fields] == ["item", "name", "inode", "dev", "mode", "ouid",
                                          "ogid", "rdev", "nametype", "src"]
    assert (fields(rec)["dev"], fields(rec)["rdev"], fields(rec)["mode"]) == (
        "00:05", "fc:00", "020664")
    assert fields(audit_records.path_record(0, b"/x", None, "UNKNOWN"))["nametype"] == "UNKNOWN"


def test_ioctl_decode_and_names():
    r = ioctls.decode(0x4024700A)
    assert (r.dir, chr(r.type), r.nr, r.size, r.name) == (1, "p", 10, 36, "RTC_SET_TIME")
    assert ioctls.parse("rtc_rd_time") == 0x80247009 and ioctls.parse("0x5401") == 0x5401
    assert ioctls.decode(0xC0107A01).describe() == "_IOC(read|write,'z',0x1,16)"
    assert ioctls.interpreted(0x541B) == "TIOCINQ"        # as ausearch names it
    assert ioctls.NAMES[0x541B] == "FIONREAD"
    with pytest.raises(ValueError):
        ioctls.parse("NO_SUCH_IOCTL")


@pytest.mark.parametrize("status,text", [(15, "killed(SIGTERM)"), (0x86, "killed(SIGABRT,core)"),
                                         (3 << 8, "exited(3)"), (0, "exited(0)")])
def test_wait_status_interpretation(status, text):
    assert interpret_value(1701, "status", f'"{status}"', {})[1] == text


def test_clock_texts():
    assert fmt_ns(1_795_318_020_000_000_001) == "1795318020.000000001"
    assert fmt_ns(-1) == "-0.000000001"
    assert rtc_text((0, 0, 12, 1, 0, 126, 0, 0, 0)) == "2026-01-01T12:00:00"
    kind, out = interpret_value(1316, "old", '"0.5"', {})
    assert kind == "walltime" and out.endswith(".5")
