"""What the real ausearch/aureport (auditd 3.0.9) do with the lines audtrace writes.

These tests need the audit userspace binaries, not the kernel: they write temp log
files and read them back with ausearch/aureport. Each claim about the tools is
checked against the tools, including the places where audtrace's interpretation
deliberately differs from ``ausearch -i``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from audtrace.compat import interpret, record, tables
from audtrace.compat.record import Event, Record, enc_hex, enc_int, enc_str
from audtrace.compat.tables import AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64
from audtrace.tracer import serials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(
    shutil.which("ausearch") is None or shutil.which("aureport") is None,
    reason="needs ausearch/aureport (package auditd)",
)

TZ = "XYZ-5:30"  # a zone with a half-hour offset, no tzdata needed
EBPF_PID = 4242


@pytest.fixture(autouse=True)
def _local_time(monkeypatch):
    monkeypatch.setenv("TZ", TZ)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def tool(*args: str) -> str:
    env = dict(os.environ, LC_ALL="C", TZ=TZ)
    res = subprocess.run(args, capture_output=True, env=env, timeout=60)
    return res.stdout.decode("utf-8", "surrogateescape")


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return path


def ebpf_serial(counter: int, slot: int = 5) -> int:
    """A serial as tracer/serials.py gives them: bit 31, the run's slot, a counter."""
    return serials.KERNEL_LIMIT | slot << serials.COUNTER_BITS | counter


def found_serials(text: str) -> list[int]:
    """Serials of the events in ausearch/aureport --raw output, in order, unique."""
    out: list[int] = []
    for m in re.finditer(r"msg=audit\([^:)]*:(\d+)\)", text):
        n = int(m.group(1))
        if n not in out:
            out.append(n)
    return out


def interpreted_blocks(text: str) -> dict[int, str]:
    """ausearch -i output split into events, keyed by serial."""
    blocks = {}
    for block in text.split("----\n"):
        if block:
            serial = int(re.search(r"msg=audit\([^)]*:(\d+)\)", block).group(1))
            blocks[serial] = "----\n" + block.rstrip("\n")
    return blocks


# ---------------------------------------------------------------- event makers


def syscall_record(
    syscall: int,
    *,
    arch: int = AUDIT_ARCH_X86_64,
    exit: int | None = 0,
    args: tuple[int, ...] = (0x1, 0x2, 0x3, 0x4),
    pid: int = 3000,
    ppid: int = 2999,
    uid: int = 0,
    auid: int = 4294967295,
    ses: int = 4294967295,
    comm: bytes = b"kill",
    exe: bytes = b"/usr/bin/kill",
    key: str = '"k1"',
    items: int = 0,
) -> Record:
    f: list[tuple[str, str]] = [("arch", enc_hex(arch)), ("syscall", enc_int(syscall))]
    if exit is not None:
        f += [("success", "yes" if exit >= 0 else "no"), ("exit", enc_int(exit))]
    f += [(f"a{i}", enc_hex(v)) for i, v in enumerate(args)]
    f += [("items", enc_int(items)), ("ppid", enc_int(ppid)), ("pid", enc_int(pid))]
    f += [("auid", enc_int(auid)), ("uid", enc_int(uid)), ("gid", "0")]
    f += [(n, enc_int(uid)) for n in ("euid", "suid", "fsuid")]
    f += [(n, "0") for n in ("egid", "sgid", "fsgid")]
    f += [("tty", "(none)"), ("ses", enc_int(ses)), ("comm", enc_str(comm))]
    f += [("exe", enc_str(exe)), ("key", key)]
    return Record("SYSCALL", f)


def obj_pid(opid: int, ocomm: bytes = b"sleep", ouid: int = 0) -> Record:
    return Record(
        "OBJ_PID",
        [("opid", enc_int(opid)), ("oauid", "-1"), ("ouid", enc_int(ouid)), ("oses", "-1"),
         ("ocomm", enc_str(ocomm))],
    )  # fmt: skip


def proctitle(*argv: bytes) -> Record:
    return Record("PROCTITLE", [("proctitle", enc_str(b"\0".join(argv)))])


def kill_event(serial: int, *, source: str = "ebpf", pid: int = 5555, sig: int = 12,
               sec: int = 1795314885, msec: int = 413, target: int = 3425,
               key: str = '"sigkey"', uid: int = 0) -> Event:  # fmt: skip
    recs = [
        syscall_record(62, args=(target, sig, 0, 0), pid=pid, key=key, uid=uid),
        obj_pid(target),
        proctitle(b"/bin/kill", b"-USR2", str(target).encode()),
    ]
    return Event(sec, msec, serial, recs, source)


# Real kernel payloads (NETLINK_AUDIT, kernel 6.18), captured for this test corpus.
KERNEL_KILL = [
    (1300, "audit(1795314885.413:13): arch=c000003e syscall=62 success=yes exit=0 a0=d61 "
     "a1=c a2=0 a3=7f1095bcdac0 items=0 ppid=3423 pid=3426 auid=4294967295 uid=0 gid=0 "
     "euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm=\"kill\" "
     "exe=\"/usr/bin/kill\" key=\"cmpsig\""),
    (1318, "audit(1795314885.413:13): opid=3425 oauid=-1 ouid=0 oses=-1 ocomm=\"sleep\""),
    (1327, "audit(1795314885.413:13): proctitle=2F62696E2F6B696C6C002D555352320033343235"),
]  # fmt: skip


def kernel_event(payloads: list[tuple[int, str]]) -> Event:
    ev = None
    for msg_type, text in payloads:
        sec, msec, serial, body = record.parse_netlink(msg_type, text)
        if ev is None:
            ev = Event(sec, msec, serial, [], "audit")
        ev.records.append(Record(record.record_type_name(msg_type), body=body))
    assert ev is not None
    return ev


# ------------------------------------------ fact 1: eBPF serials and src=ebpf


@pytest.fixture
def mixed_log(tmp_path):
    """A kernel kill event and an eBPF kill event in the same millisecond, interleaved."""
    kev = kernel_event(KERNEL_KILL)
    eev = kill_event(ebpf_serial(7), sec=kev.sec, msec=kev.msec, uid=1000)
    klines = record.format_raw(kev).split("\n")
    elines = record.format_raw(eev).split("\n")
    assert all(line.endswith(" src=ebpf") for line in elines)
    lines = [line for i in range(len(klines)) for line in (klines[i], elines[i])]
    return write_log(tmp_path / "mixed.log", lines), kev, eev


def test_ebpf_lines_are_searchable(mixed_log):
    path, kev, eev = mixed_log
    both = [kev.serial, eev.serial]
    assert sorted(
        found_serials(tool("ausearch", "-if", str(path), "-sc", "kill", "--raw"))
    ) == sorted(both)
    assert found_serials(tool("ausearch", "-if", str(path), "-p", "5555", "--raw")) == [eev.serial]
    assert found_serials(tool("ausearch", "-if", str(path), "-p", "3426", "--raw")) == [kev.serial]
    assert found_serials(tool("ausearch", "-if", str(path), "-k", "sigkey", "--raw")) == [
        eev.serial
    ]
    assert found_serials(tool("ausearch", "-if", str(path), "-ui", "1000", "--raw")) == [eev.serial]
    assert found_serials(tool("ausearch", "-if", str(path), "-ui", "0", "--raw")) == [kev.serial]


def test_same_millisecond_events_stay_apart(mixed_log):
    path, kev, eev = mixed_log
    raw = tool("ausearch", "-if", str(path), "--raw")
    # --raw regroups records by event: each event's three lines are contiguous.
    serials = [int(m) for m in re.findall(r":(\d+)\):", raw)]
    assert serials in ([kev.serial] * 3 + [eev.serial] * 3, [eev.serial] * 3 + [kev.serial] * 3)
    assert "Number of events: 2" in tool("aureport", "-if", str(path), "--summary")
    assert "Number of process IDs: 2" in tool("aureport", "-if", str(path), "--summary")
    report = tool("aureport", "-if", str(path), "-s")
    assert re.search(rf" 62 5555 kill -1 {eev.serial}$", report, re.M)
    assert re.search(rf" 62 3426 kill -1 {kev.serial}$", report, re.M)


def test_ebpf_event_interpreted_by_ausearch(mixed_log):
    path, kev, eev = mixed_log
    blocks = interpreted_blocks(tool("ausearch", "-if", str(path), "-i"))
    assert set(blocks) == {kev.serial, eev.serial}
    # src=ebpf is shown as an ordinary field and the huge serial as a number.
    assert blocks[eev.serial] == interpret.format_interpreted(eev)
    assert blocks[kev.serial] == interpret.format_interpreted(kev)
    assert (
        " a1=SIGUSR2 " in blocks[eev.serial]
        and "key=sigkey src=ebpf \n" in blocks[eev.serial] + "\n"
    )


def test_ausearch_event_id_selects_ebpf_serials(mixed_log):
    """``ausearch -a`` keeps the id in 32 bits: eBPF serials fit, the largest included."""
    path, kev, eev = mixed_log
    assert found_serials(tool("ausearch", "-if", str(path), "-a", str(kev.serial), "--raw")) == [
        kev.serial
    ]
    assert found_serials(tool("ausearch", "-if", str(path), "-a", str(eev.serial), "--raw")) == [
        eev.serial
    ]
    top = ebpf_serial(serials.COUNTER_MASK, slot=serials.SLOTS - 1)
    assert top == 2**32 - 1
    path2 = write_log(path.with_name("top.log"),
                      record.format_raw(kill_event(top, sec=kev.sec + 5)).split("\n"))
    assert found_serials(tool("ausearch", "-if", str(path2), "-a", str(top), "--raw")) == [top]


def test_auparse_formats_accept_ebpf_events(mixed_log):
    path, kev, eev = mixed_log
    csv = tool("ausearch", "-if", str(path), "--format", "csv")
    assert f",{eev.serial}," in csv and f",{kev.serial}," in csv
    text = tool("ausearch", "-if", str(path), "--format", "text")
    assert text.count("killed-list-of-pids") == 2


# ------------------------------------ fact 3: SYSCALL records without a2/a3


@pytest.mark.parametrize(
    ("drop", "searchable"),
    [(("a3",), True), (("a2", "a3"), True), (("a1", "a2", "a3"), False),
     (("a0", "a1", "a2", "a3"), False)],
)  # fmt: skip
def test_missing_syscall_args(tmp_path, drop, searchable):
    ev = kill_event(21, source="audit")
    sc = ev.records[0]
    sc.fields = [(k, v) for k, v in sc.fields if k not in drop]
    path = write_log(tmp_path / "args.log", record.format_raw(ev).split("\n"))
    want = [21] if searchable else []
    for query in (["-sc", "kill"], ["-p", "5555"], ["-k", "sigkey"], ["-ui", "0"]):
        assert found_serials(tool("ausearch", "-if", str(path), *query, "--raw")) == want
    if searchable:
        blocks = interpreted_blocks(tool("ausearch", "-if", str(path), "-i"))
        assert blocks[21] == interpret.format_interpreted(ev)


# ------------------------ fact 2: signals the kernel generates outside a syscall


def signal_candidates(serial: int) -> dict[str, list[Record]]:
    """Ways to write 'the kernel sent SIGSEGV in the context of pid 777 to pid 888'."""
    ctx = [("pid", "777"), ("uid", "1000"), ("auid", "1000"), ("ses", "3")]
    victim = [("opid", "888"), ("ocomm", '"victim"')]
    msg = '\'op=signal-generate sig=11 comm="ctxcomm" exe="/usr/bin/ctx" '
    return {
        # the recommended form: one user-space record, the victim inside msg
        "user": [Record("USER", ctx + [("msg", msg + 'opid=888 ocomm="victim" res=success\'')])],
        "user+obj": [Record("USER", ctx + [("msg", msg + "res=success'")]),
                     Record("OBJ_PID", victim)],
        "user-ouid": [Record("USER", ctx + [("msg", msg + "opid=888 ouid=1001 res=success'")])],
        "abend+obj": [Record("ANOM_ABEND", [
                          ("auid", "1000"), ("uid", "1000"), ("gid", "1000"), ("ses", "3"),
                          ("pid", "777"), ("comm", '"ctxcomm"'), ("exe", '"/usr/bin/ctx"'),
                          ("sig", "11"), ("res", "1")]),
                      Record("OBJ_PID", victim)],
        "unknown1399+obj": [Record("UNKNOWN[1399]", ctx + [("comm", '"ctxcomm"'), ("sig", "11")]),
                            Record("OBJ_PID", victim)],
    }  # fmt: skip


def _candidate_log(tmp_path: Path, name: str) -> tuple[Path, Event]:
    ev = Event(1795314885, 500, ebpf_serial(99), signal_candidates(0)[name], "ebpf")
    path = write_log(tmp_path / f"{name}.log", record.format_raw(ev).split("\n"))
    return path, ev


def _count(text: str, what: str) -> int:
    m = re.search(rf"Number of {what}: (\d+)", text)
    assert m, text
    return int(m.group(1))


def test_signal_as_user_record(tmp_path):
    path, ev = _candidate_log(tmp_path, "user")
    for query in (["-p", "777"], ["-ui", "1000"], ["-ua", "1000"], ["--session", "3"],
                  ["-x", "/usr/bin/ctx"], ["-c", "ctxcomm"], ["-m", "USER"]):  # fmt: skip
        assert found_serials(tool("ausearch", "-if", str(path), *query, "--raw")) == [ev.serial]
    # the victim is the object: searching its pid does not find the event
    assert tool("ausearch", "-if", str(path), "-p", "888", "--raw") == ""
    # not a syscall, and user records carry no searchable key
    assert tool("ausearch", "-if", str(path), "-sc", "kill", "--raw") == ""
    summary = tool("aureport", "-if", str(path), "--summary")
    assert _count(summary, "events") == 1 and _count(summary, "anomaly events") == 0
    assert re.search(
        rf" 777 /usr/bin/ctx 0 1000 {ev.serial}$", tool("aureport", "-if", str(path), "-p"), re.M
    )
    blocks = interpreted_blocks(tool("ausearch", "-if", str(path), "-i"))
    assert "sig=SIGSEGV" in blocks[ev.serial]
    assert blocks[ev.serial] == interpret.format_interpreted(ev)


def test_user_record_splits_from_following_records(tmp_path):
    """Records of user-space types are whole events: an OBJ_PID after one is a separate event."""
    path, ev = _candidate_log(tmp_path, "user+obj")
    assert tool("ausearch", "-if", str(path), "-i").count("----\n") == 2
    assert _count(tool("aureport", "-if", str(path), "--summary"), "events") == 2


def test_user_record_must_not_carry_ouid(tmp_path):
    """ausearch's user-record parser rejects a later 'ouid=' (preceded by 'o'): -ui/-ua fail."""
    path, ev = _candidate_log(tmp_path, "user-ouid")
    assert found_serials(tool("ausearch", "-if", str(path), "-p", "777", "--raw")) == [ev.serial]
    assert tool("ausearch", "-if", str(path), "-ui", "1000", "--raw") == ""
    assert tool("ausearch", "-if", str(path), "-ua", "1000", "--raw") == ""


def test_anom_abend_counts_as_anomaly(tmp_path):
    path, ev = _candidate_log(tmp_path, "abend+obj")
    assert found_serials(tool("ausearch", "-if", str(path), "-p", "777", "--raw")) == [ev.serial]
    summary = tool("aureport", "-if", str(path), "--summary")
    assert _count(summary, "events") == 1 and _count(summary, "anomaly events") == 1
    assert "ANOM_ABEND" in tool("aureport", "-if", str(path), "--anomaly")


def test_unknown_kernel_type_is_not_searchable(tmp_path):
    path, ev = _candidate_log(tmp_path, "unknown1399+obj")
    assert tool("ausearch", "-if", str(path), "-p", "777", "--raw") == ""
    assert tool("ausearch", "-if", str(path), "-ui", "1000", "--raw") == ""
    assert found_serials(tool("ausearch", "-if", str(path), "-m", "UNKNOWN[1399]", "--raw")) == [
        ev.serial
    ]
    blocks = interpreted_blocks(tool("ausearch", "-if", str(path), "-i"))
    assert blocks[ev.serial] == interpret.format_interpreted(ev)


# -------------------------------------------------------- tables vs ausyscall


@pytest.mark.parametrize("arch", [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64])
def test_syscall_tables_match_ausyscall(tmp_path, arch):
    name = tables.arch_name(arch)
    dump = tool("ausyscall", name, "--dump")
    rows = [line.split("\t") for line in dump.splitlines() if line[:1].isdigit()]
    assert len(rows) > 250
    for nr, sc in rows:
        assert tables.syscall_name(arch, int(nr)) == sc
        assert tables.syscall_number(arch, sc) == int(nr)


def test_generate_data_reproduces_committed_tables(tmp_path):
    tables.generate_data(tmp_path)
    for committed in tables.DATA_DIR.glob("*.tsv"):
        assert (tmp_path / committed.name).read_text() == committed.read_text()


# ------------------------------------------ interpretation: exact ausearch -i


def compare_with_ausearch(tmp_path: Path, events: list[Event]) -> dict[int, tuple[str, str]]:
    """Write events raw, run ausearch -i, return {serial: (ausearch, ours)}."""
    lines = [line for ev in events for line in record.format_raw(ev).split("\n")]
    path = write_log(tmp_path / "cmp.log", lines)
    theirs = interpreted_blocks(tool("ausearch", "-if", str(path), "-i"))
    ctx: dict = {}
    return {
        ev.serial: (theirs.get(ev.serial, ""), interpret.format_interpreted(ev, ctx))
        for ev in events
    }


def assert_same(pairs: dict[int, tuple[str, str]]) -> None:
    for _serial, (theirs, ours) in pairs.items():
        assert ours == theirs


def test_kernel_corpus_interpreted_exactly(tmp_path):
    assert_same(compare_with_ausearch(tmp_path, [kernel_event(KERNEL_KILL)]))


def test_every_errno_as_ausearch(tmp_path):
    events = [
        Event(1795314885, 1, n, [syscall_record(49, exit=-n)], "audit") for n in range(1, 140)
    ]
    assert_same(compare_with_ausearch(tmp_path, events))


def test_kernel_internal_errno_goes_beyond_ausearch(tmp_path):
    ev = Event(1795314885, 1, 1, [syscall_record(61, exit=-512)], "audit")
    theirs, ours = compare_with_ausearch(tmp_path, [ev])[1]
    assert "exit=(null)(Unknown error 512)" in theirs
    assert "exit=ERESTARTSYS(Unknown error 512)" in ours


SIGNAL_ARGS = {  # syscall name -> index of the signal argument
    "kill": 1, "tkill": 1, "tgkill": 2, "rt_sigaction": 0,
    "rt_sigqueueinfo": 1, "rt_tgsigqueueinfo": 2, "pidfd_send_signal": 1,
}  # fmt: skip
BEYOND_AUSEARCH = {"rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"}


def _arg(line: str, idx: int) -> str:
    return line.split(f" a{idx}=", 1)[1].split(" ", 1)[0]


@pytest.mark.parametrize("arch", [AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386])
def test_signal_arguments(tmp_path, arch):
    """Signal arguments: ausearch's names where it has them, better ones where it does not."""
    sigs = [*range(0, 66), 0xFFFFFFFF]
    events, expect = [], {}
    for name, idx in SIGNAL_ARGS.items():
        nr = tables.syscall_number(arch, name)
        if nr is None:
            continue
        for sig in sigs:
            args = [0x10, 0x11, 0x12, 0x13]
            args[idx] = sig
            serial = len(events) + 1
            rec = syscall_record(nr, arch=arch, args=tuple(args))
            events.append(Event(1795314885, 2, serial, [rec], "audit"))
            expect[serial] = (name, idx, sig)
    pairs = compare_with_ausearch(tmp_path, events)
    ausearch_name = {  # what ausearch calls each signal value, read off its kill lines
        sig: _arg(pairs[s][0], 1) for s, (name, _i, sig) in expect.items() if name == "kill"
    }
    for serial, (theirs, ours) in pairs.items():
        name, idx, sig = expect[serial]
        t, o = _arg(theirs, idx), _arg(ours, idx)
        assert ours.replace(f" a{idx}={o} ", f" a{idx}={t} ") == theirs  # the rest is identical
        assert t == (f"0x{sig:x}" if name in BEYOND_AUSEARCH else ausearch_name[sig])
        if 34 <= sig <= 64:  # real-time: named as bash's kill -l names them
            assert ausearch_name[sig] == f"unknown-signal(0x{sig:x})"
            kill_l = subprocess.run(["bash", "-c", f"kill -l {sig}"], capture_output=True,
                                    text=True).stdout.strip()  # fmt: skip
            assert o == "SIG" + kill_l
        elif sig == 30:
            assert (ausearch_name[sig], o) == ("IGPWR", "SIGPWR")  # ausearch's table has a typo
        else:
            assert o == ausearch_name[sig]


def test_enriched_is_read_by_ausearch(tmp_path):
    events = [kernel_event(KERNEL_KILL), kill_event(ebpf_serial(3), uid=1000, sec=1795314890)]
    saddr = Record("SOCKADDR", [("saddr", "0200A53F7F0000010000000000000000")])
    cwd = Record("CWD", [("cwd", '"/work"')])
    sock = Event(1795314886, 7, 8, [syscall_record(49, exit=-98), saddr, cwd], "audit")
    events.append(sock)
    enriched = "\n".join(interpret.format_enriched(ev) for ev in events).split("\n")
    raw = "\n".join(record.format_raw(ev) for ev in events).split("\n")
    assert sum("\x1d" in line for line in enriched) == 6  # not PROCTITLE/CWD
    assert '\x1dARCH=x86_64 SYSCALL=kill AUID="unset" UID="root"' in enriched[0]
    assert any(
        line.endswith("\x1dSADDR={ saddr_fam=inet laddr=127.0.0.1 lport=42303 }")
        for line in enriched
    )
    epath = write_log(tmp_path / "enriched.log", enriched)
    rpath = write_log(tmp_path / "raw.log", raw)
    # ausearch --raw gives the lines back (it adds 0x1d to every record of an enriched event)
    back = [
        line.rstrip("\x1d")
        for line in tool("ausearch", "-if", str(epath), "--raw").split("\n")
        if line
    ]
    assert sorted(back) == sorted(line for line in enriched)
    assert tool("ausearch", "-if", str(epath), "-i") == tool("ausearch", "-if", str(rpath), "-i")
    # ausearch takes names from the enrichment: a changed name shows up in -i
    fake = [line.replace('UID="root"', 'UID="somebody"', 1) for line in enriched]
    fpath = write_log(tmp_path / "fake.log", fake)
    assert " uid=somebody " in tool("ausearch", "-if", str(fpath), "-i")


def test_node_prefix(tmp_path):
    ev = kill_event(ebpf_serial(5))
    ev.node = "web01"
    path = write_log(tmp_path / "node.log", record.format_raw(ev).split("\n"))
    assert found_serials(tool("ausearch", "-if", str(path), "-p", "5555", "--raw")) == [ev.serial]
    assert interpreted_blocks(tool("ausearch", "-if", str(path), "-i"))[ev.serial] == (
        interpret.format_interpreted(ev)
    )


# ---------------------------------------------- differential (property) test

_UIDS = st.sampled_from([0, 1000, 4294967295, 65534, 31337, 2**31 + 5])
_TEXT = st.binary(max_size=24)
# ausearch leaves its buffer unterminated after a trailing key separator when a key
# needs escaping (it then prints heap garbage): no such keys.
_KEY = _TEXT.filter(lambda b: not b.endswith(b"\x01")).map(enc_str)
_SYSCALLS = [
    "kill", "tkill", "tgkill", "rt_sigaction", "openat", "open", "unlinkat", "socket",
    "setuid", "setresgid", "chmod", "mkdir", "mknod", "access", "faccessat", "exit_group",
    "exit", "creat", "fchmodat", "mq_open", "chown", "bind", "connect", "write", "renameat2",
    "setreuid", "socketcall", "ipc", "linkat", "readlinkat", "setfsgid", "mkdirat",
]  # fmt: skip
_ARGVALS = st.one_of(
    st.sampled_from(
        [0, 1, 2, 9, 15, 0o100, 0o101, 0o1102, 0xFFFFFF9C, 0xFFFFFFFF, 2**64 - 1, 23, 24]
    ),
    st.integers(0, 29),
    st.integers(0, 2**64 - 1),
)


@st.composite
def syscall_events(draw, serial: int) -> Event:
    arch = draw(st.sampled_from([AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64]))
    names = [n for n in _SYSCALLS if tables.syscall_number(arch, n) is not None]
    nr = draw(st.one_of(st.sampled_from(names).map(lambda n: tables.syscall_number(arch, n)),
                        st.integers(0, 600)))  # fmt: skip
    if tables.syscall_name(arch, nr) in set(interpret.NOT_INTERPRETED) | BEYOND_AUSEARCH:
        nr = tables.syscall_number(arch, "write")  # where the two differ: tested elsewhere
    name = tables.syscall_name(arch, nr)
    args = list(draw(st.tuples(_ARGVALS, _ARGVALS, _ARGVALS, _ARGVALS)))
    for beyond, idx in SIGNAL_ARGS.items():  # keep to where ausearch and audtrace agree
        if name == beyond:
            args[idx] = draw(st.sampled_from([0, 1, 9, 15, 29, 31, 0xFFFFFFFF]))
    exit_ = draw(st.one_of(st.none(), st.integers(-140, 5000)))
    key = draw(st.one_of(st.just("(null)"), _KEY,
                         st.lists(st.text("abc", min_size=1, max_size=4), min_size=2, max_size=3)
                         .map(lambda ks: enc_str("\x01".join(ks).encode()))))  # fmt: skip
    recs = [syscall_record(nr, arch=arch, exit=exit_, args=tuple(args), uid=draw(_UIDS),
                           auid=draw(_UIDS), ses=draw(st.sampled_from([4294967295, 3])),
                           comm=draw(_TEXT), exe=draw(_TEXT), key=key)]  # fmt: skip
    extra = draw(
        st.lists(st.sampled_from(["sockaddr", "cwd", "path", "obj", "execve"]), max_size=4)
    )
    for kind in extra:
        if kind == "sockaddr":
            fam = draw(st.sampled_from([1, 2, 3, 8, 9, 10, 16, 17, 44, 45, 200]))
            # ax25 and atmpvc read fixed offsets without a length check: keep them in the data
            body = draw(st.binary(min_size={3: 7, 8: 4}.get(fam, 0), max_size=40))
            data = fam.to_bytes(2, "little") + body
            if fam == 1 and draw(st.booleans()):
                data = (
                    data[:2] + draw(st.binary(max_size=20).filter(lambda b: b"\0" not in b)) + b"\0"
                )
            recs.append(Record("SOCKADDR", [("saddr", data.hex().upper())]))
        elif kind == "cwd":
            recs.append(Record("CWD", [("cwd", enc_str(draw(_TEXT)))]))
        elif kind == "path":
            mode = draw(
                st.sampled_from([0o100644, 0o40755, 0o120777, 0o20620, 0o104755, 0o1777, 0])
            )
            recs.append(Record("PATH", [
                ("item", "0"), ("name", draw(st.one_of(_TEXT.map(enc_str), st.just("(null)")))),
                ("inode", "12"), ("dev", "fe:00"), ("mode", f"0{mode:o}"),
                ("ouid", enc_int(draw(_UIDS))), ("ogid", "0"), ("rdev", "00:00"),
                ("nametype", "NORMAL"), ("cap_fp", enc_hex(draw(st.integers(0, 2**41 - 1)))),
                ("cap_fi", "0"), ("cap_fe", "0"), ("cap_fver", "0"), ("cap_frootid", "0"),
            ]))  # fmt: skip
        elif kind == "obj":
            recs.append(obj_pid(draw(st.integers(1, 99999)), draw(_TEXT), draw(_UIDS)))
        else:
            argv = draw(st.lists(_TEXT, min_size=1, max_size=3))
            recs.append(Record("EXECVE", [("argc", str(len(argv)))] + [
                (f"a{i}", enc_str(a)) for i, a in enumerate(argv)]))  # fmt: skip
    recs.append(
        Record(
            "PROCTITLE",
            [("proctitle", enc_str(b"\0".join(draw(st.lists(_TEXT, min_size=1, max_size=3)))))],
        )
    )
    sec = draw(st.integers(946684800, 2000000000))
    return Event(
        sec, draw(st.integers(0, 999)), serial, recs, draw(st.sampled_from(["audit", "ebpf"]))
    )


@st.composite
def other_events(draw, serial: int) -> Event:
    kind = draw(st.sampled_from(["config", "user", "unknown"]))
    ses = draw(st.sampled_from(["4294967295", "2"]))
    if kind == "config":
        recs = [Record("CONFIG_CHANGE", [("auid", enc_int(draw(_UIDS))), ("ses", ses),
                                         ("op", "add_rule"), ("key", draw(_KEY)),
                                         ("list", str(draw(st.integers(0, 8)))),
                                         ("res", str(draw(st.integers(0, 2))))])]  # fmt: skip
    elif kind == "user":
        acct = enc_str(draw(_TEXT))
        msg = f"'op=PAM:session_open acct={acct} exe=\"/usr/bin/su\" hostname=? res=success'"
        uid = enc_int(draw(_UIDS))
        recs = [Record("USER", [("pid", "12"), ("uid", uid), ("auid", "4294967295"),
                                ("ses", ses), ("msg", msg)])]  # fmt: skip
    else:
        recs = [Record("UNKNOWN[1399]", [("pid", "12"), ("uid", enc_int(draw(_UIDS))),
                                         ("sig", str(draw(st.integers(0, 29)))),
                                         ("comm", enc_str(draw(_TEXT)))])]  # fmt: skip
    return Event(draw(st.integers(946684800, 2000000000)), 5, serial, recs, "audit")


# AUDTRACE_FUZZ_EXAMPLES=600 for a longer run
_EXAMPLES = int(os.environ.get("AUDTRACE_FUZZ_EXAMPLES", "60"))


@settings(
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_interpretation_matches_ausearch(tmp_path, data):
    events = [data.draw(syscall_events(i)) for i in range(1, 8)]
    events += [data.draw(other_events(i)) for i in range(8, 11)]
    assert_same(compare_with_ausearch(tmp_path, events))
