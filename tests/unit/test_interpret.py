"""Interpretation, ENRICHED and JSON output, on records whose ausearch reading is known.

The expected texts are what ausearch 3.0.9 prints for these records (measured);
tests/integration/test_ausearch_format.py checks the same functions against the ausearch
binary itself.
"""

from __future__ import annotations

import time

import orjson
import pytest
from audtrace.compat import interpret, jsonfmt
from audtrace.compat.record import Event, Record, enc_str


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC0")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def kill_syscall(
    sig: str = "f", exit_: str = "0", syscall: str = "62", args: tuple[str, ...] | None = None
) -> Record:
    a0, a1, a2, a3 = args or ("d61", sig, "0", "7f1095bcdac0")
    return Record(
        "SYSCALL",
        body=f"arch=c000003e syscall={syscall} success=yes exit={exit_} a0={a0} a1={a1} a2={a2} "
        f"a3={a3} items=0 ppid=3423 pid=3426 auid=4294967295 uid=0 gid=0 euid=0 "
        'suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="kill" '
        'exe="/usr/bin/kill" key="cmpsig"',
    )


OBJ = Record("OBJ_PID", body='opid=3425 oauid=-1 ouid=0 oses=-1 ocomm="sleep"')
TITLE = Record("PROCTITLE", body="proctitle=2F62696E2F6B696C6C002D555352320033343235")


def test_kill_event_interpreted():
    ev = Event(1795314885, 413, 13, [kill_syscall("c"), OBJ, TITLE], "audit")
    assert interpret.format_interpreted(ev) == (
        "----\n"
        "type=PROCTITLE msg=audit(11/22/26 02:34:45.413:13) : proctitle=/bin/kill -USR2 3425 \n"
        "type=OBJ_PID msg=audit(11/22/26 02:34:45.413:13) : opid=3425 oauid=unset ouid=root "
        "oses=-1 ocomm=sleep \n"
        "type=SYSCALL msg=audit(11/22/26 02:34:45.413:13) : arch=x86_64 syscall=kill "
        "success=yes exit=0 a0=0xd61 a1=SIGUSR2 a2=0x0 a3=0x7f1095bcdac0 items=0 ppid=3423 "
        "pid=3426 auid=unset uid=root gid=root euid=root suid=root fsuid=root egid=root "
        "sgid=root fsgid=root tty=(none) ses=unset comm=kill exe=/usr/bin/kill key=cmpsig "
    )


def test_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "XYZ-5:30")
    time.tzset()
    ev = Event(1795314885, 4, 9, [OBJ], "audit")
    assert "msg=audit(11/22/26 08:04:45.004:9) : " in interpret.format_interpreted(ev)


def test_src_field_and_node_on_ebpf_events():
    ev = Event(1795314885, 413, 2**31 + 5, [OBJ], "ebpf", node="web01")
    line = interpret.format_interpreted(ev).split("\n")[1]
    assert line.startswith("node=web01 type=OBJ_PID msg=audit(11/22/26 02:34:45.413:")
    assert line.endswith(" ocomm=sleep src=ebpf ")


@pytest.mark.parametrize(
    ("exit_", "shown"),
    [("-98", "EADDRINUSE(Address already in use)"), ("-1", "EPERM(Operation not permitted)"),
     ("-3", "ESRCH(No such process)"), ("3", "3")],
)  # fmt: skip
def test_exit_codes(exit_, shown):
    assert ("exit", shown) in interpret.interpret_record(kill_syscall(exit_=exit_))


@pytest.mark.parametrize(
    ("syscall", "arg", "value", "shown"),
    [
        ("62", "a1", "f", "SIGTERM"),  # kill
        ("62", "a1", "0", "SIG0"),
        ("62", "a1", "25", "SIGRTMIN+3"),  # 37: beyond ausearch (unknown-signal(0x25))
        ("62", "a1", "1e", "SIGPWR"),  # ausearch: IGPWR
        ("200", "a1", "9", "SIGKILL"),  # tkill
        ("234", "a2", "a", "SIGUSR1"),  # tgkill
        ("129", "a1", "a", "SIGUSR1"),  # rt_sigqueueinfo: beyond ausearch
        ("297", "a2", "2", "SIGINT"),  # rt_tgsigqueueinfo: beyond ausearch
        ("424", "a1", "9", "SIGKILL"),  # pidfd_send_signal: beyond ausearch
        ("257", "a0", "ffffff9c", "AT_FDCWD"),  # openat
        ("257", "a2", "241", "O_WRONLY|O_CREAT|O_TRUNC"),
        ("231", "a0", "1", "EXIT_FAILURE"),  # exit_group
        ("1", "a1", "f", "0xf"),  # write: nothing to interpret
    ],
)
def test_syscall_arguments(syscall, arg, value, shown):
    args = ["0", "0", "0", "0"]
    args[int(arg[1])] = value
    rec = kill_syscall(syscall=syscall, args=tuple(args))
    assert dict(interpret.interpret_record(rec))[arg] == shown


def test_sockaddr_and_paths():
    rec = Record("SOCKADDR", body="saddr=0200BDE87F0000010000000000000000")
    assert interpret.interpret_record(rec) == [
        ("saddr", "{ saddr_fam=inet laddr=127.0.0.1 lport=48616 }")
    ]
    v6 = "0A00005000000000" + "00000000000000000000000000000001" + "00000000"
    assert interpret.interpret_record(Record("SOCKADDR", [("saddr", v6)]))[0][1] == (
        "{ saddr_fam=inet6 laddr=::1 lport=80 }"
    )
    unix = "0100" + b"\0abstract name".hex()
    assert interpret.interpret_record(Record("SOCKADDR", [("saddr", unix)]))[0][1] == (
        "{ saddr_fam=local path=abstract name }"
    )
    path = Record(
        "PATH",
        body='item=0 name="/tmp/x" inode=5 dev=fe:00 mode=040755 ouid=0 ogid=0 rdev=00:00 '
        "nametype=PARENT cap_fp=0 cap_fi=2000 cap_fe=0 cap_fver=0 cap_frootid=0",
    )
    got = dict(interpret.interpret_record(path))
    assert got["mode"] == "dir,755" and got["cap_fp"] == "none" and got["cap_fi"] == "net_raw"
    assert got["cap_fe"] == "0"


def test_untrusted_strings_decoded_and_escaped():
    rec = Record("CWD", [("cwd", enc_str(b"/tmp/a b\nc"))])
    assert interpret.interpret_record(rec) == [("cwd", "/tmp/a b\\012c")]
    argv = Record("PROCTITLE", [("proctitle", enc_str(b"sh\0-c\0echo hi"))])
    assert interpret.interpret_record(argv) == [("proctitle", "sh -c echo hi")]
    keys = Record("CONFIG_CHANGE", [("key", enc_str(b"k1\x01k2")), ("list", "4"), ("res", "1")])
    assert interpret.interpret_record(keys) == [
        ("key", "k1\x01k2"),
        ("list", "exit"),
        ("res", "yes"),
    ]
    ev = Event(1, 0, 1, [keys], "audit")
    assert "key=k1 key=k2 list=exit res=yes " in interpret.format_interpreted(ev)


def test_user_message_fields():
    rec = Record("USER", body="pid=7 uid=0 auid=4294967295 ses=3 msg='op=x sig=11 res=success'")
    assert interpret.interpret_record(rec) == [
        ("pid", "7"), ("uid", "root"), ("auid", "unset"), ("ses", "3"),
        ("op", "x"), ("sig", "SIGSEGV"), ("res", "success'"),
    ]  # fmt: skip
    line = interpret.format_interpreted(Event(1, 0, 1, [rec], "audit")).split("\n")[1]
    assert line.endswith(": pid=7 uid=root auid=unset ses=3 msg='op=x sig=SIGSEGV res=success' ")


def test_unknown_types_and_daemon_records():
    rec = Record("UNKNOWN[1399]", body='pid=7 uid=0 sig=9 comm="x"')
    line = interpret.format_interpreted(Event(1, 0, 2, [rec], "audit")).split("\n")[1]
    assert line == (
        "type=UNKNOWN[1399] msg=audit(01/01/70 00:00:01.000:2) : pid=7 uid=root sig=SIGKILL comm=x "
    )
    daemon = [Record("DAEMON_START", body="op=start"), Record("DAEMON_END", body="op=end")]
    assert interpret.format_interpreted(Event(1, 0, 3, daemon, "audit")).count("\n") == 1


def test_enriched_lines():
    ev = Event(1795314885, 413, 13, [kill_syscall(), OBJ, TITLE], "audit")
    lines = interpret.format_enriched(ev).split("\n")
    assert lines[0].endswith(
        '"cmpsig"\x1dARCH=x86_64 SYSCALL=kill AUID="unset" UID="root" GID="root" EUID="root" '
        'SUID="root" FSUID="root" EGID="root" SGID="root" FSGID="root"'
    )
    assert lines[1].endswith('ocomm="sleep"\x1dOAUID="unset" OUID="root"')
    assert "\x1d" not in lines[2]  # PROCTITLE: nothing to interpret
    sock = Record("SOCKADDR", body="saddr=0200BDE87F0000010000000000000000")
    assert interpret.format_enriched(Event(1, 0, 1, [sock], "ebpf")).endswith(
        "src=ebpf\x1dSADDR={ saddr_fam=inet laddr=127.0.0.1 lport=48616 }"
    )


def test_enriched_unknown_uid_is_quoted():
    rec = Record("OBJ_PID", body='opid=1 oauid=2147483653 ouid=0 oses=1 ocomm="x"')
    assert ("OAUID", '"unknown(-2147483643)"') in interpret.enrichment(rec)


# ----------------------------------------------------------------------- JSON


def test_json_shape():
    recs = [
        kill_syscall(),
        OBJ,
        Record("OBJ_PID", body="opid=9 oauid=-1 ouid=0 oses=-1 ocomm=41"),
        TITLE,
    ]
    obj = orjson.loads(jsonfmt.format_json(Event(1795314885, 413, 2**31 + 1, recs, "ebpf", "h1")))
    assert obj["ID"] == f"1795314885.413:{2**31 + 1}" and obj["NODE"] == "h1"
    assert obj["SOURCE"] == "ebpf"
    sc = obj["SYSCALL"]
    assert sc["syscall"] == 62 and sc["a0"] == "0xd61" and sc["arch"] == "0xc000003e"
    assert sc["comm"] == "kill" and sc["key"] == "cmpsig" and sc["auid"] == 4294967295
    assert sc["SYSCALL"] == "kill" and sc["AUID"] == "unset" and sc["ARCH"] == "x86_64"
    assert [o["opid"] for o in obj["OBJ_PID"]] == [3425, 9]
    assert obj["OBJ_PID"][1]["ocomm"] == "A"  # hex decoded
    assert obj["PROCTITLE"] == {"ARGV": ["/bin/kill", "-USR2", "3425"]}


def test_json_values():
    rec = Record("PATH", [("name", enc_str(b"a\nb\xff%")), ("mode", "0100644"), ("key", "(null)")])
    obj = orjson.loads(jsonfmt.format_json(Event(1, 0, 1, [rec], "audit")))["PATH"]
    assert obj == {"name": "a%0Ab%FF%25", "mode": "0o100644", "key": None}
    keys = Record("SYSCALL", [("key", enc_str(b"k1\x01k2"))])
    assert orjson.loads(jsonfmt.format_json(Event(1, 0, 1, [keys], "audit")))["SYSCALL"]["key"] == [
        "k1", "k2",
    ]  # fmt: skip
    sock = Record("SOCKADDR", body="saddr=0200BDE87F0000010000000000000000")
    saddr = orjson.loads(jsonfmt.format_json(Event(1, 0, 1, [sock], "audit")))["SOCKADDR"]
    assert saddr["saddr"] == {"family": "inet", "addr": "127.0.0.1", "port": 48616}
