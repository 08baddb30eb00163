"""Pairing of eBPF and kernel-audit events (tracer/compare.py), on records as the kernel
writes them (taken from a real `auditctl -a always,exit -S bind` capture)."""

from __future__ import annotations

from audtrace.compat.record import Event, Record
from audtrace.tracer.compare import Facts, compare, format_table, pair

SYSCALL = (
    "arch=c000003e syscall=49 success=no exit=-98 a0=4 a1=7fffaf337d90 a2=10 a3=0 "
    "items=0 ppid=32372 pid={pid} auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 "
    'egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="python3" '
    'exe="/usr/bin/python3.11" key="k"'
)
SOCKADDR = "saddr=0200BDE87F0000010000000000000000"


def ev(
    source: str,
    ms: int,
    pid: int = 100,
    serial: int = 1,
    a0: str = "4",
    extra: list[Record] | None = None,
    key: str = '"k"',
) -> Event:
    body = SYSCALL.format(pid=pid).replace("a0=4", f"a0={a0}").replace('key="k"', f"key={key}")
    recs = [
        Record("SYSCALL", body=body),
        Record("SOCKADDR", body=SOCKADDR),
        *(extra or []),
        Record("PROCTITLE", body="proctitle=707974686F6E33"),
    ]
    return Event(ms // 1000, ms % 1000, serial, recs, source)


def test_same_syscall_pairs_nearest_first():
    # two identical calls 30 ms apart: each eBPF event takes the audit event a tick before it
    events = [
        ev("audit", 1000, serial=1),
        ev("audit", 1030, serial=2),
        ev("ebpf", 1034, serial=10),
        ev("ebpf", 1004, serial=11),
    ]
    pairs = pair(events)
    assert [(e.event.serial, a.event.serial) for e, a in pairs] == [(11, 1), (10, 2)]


def test_different_pid_args_or_time_do_not_pair():
    events = [
        ev("audit", 1000),
        ev("ebpf", 1003, pid=101),
        ev("ebpf", 1003, a0="5"),
        ev("ebpf", 1100),
    ]
    kinds = [(e is not None, a is not None) for e, a in pair(events)]
    assert kinds.count((True, False)) == 3 and kinds.count((False, True)) == 1


def test_equal_differing_and_one_sided_records():
    holder = Record("OBJ_PID", body='opid=7 oauid=-1 ouid=0 oses=-1 ocomm="nc" src=ebpf')
    e = ev("ebpf", 1004, extra=[holder], key="(null)")
    cmp = compare([ev("audit", 1000), e], Facts())
    (row,) = cmp.rows
    assert row.kind == "pair" and row.delta_ms == 4
    sys_diff = row.records[0]
    assert sys_diff.type == "SYSCALL" and sys_diff.differ == [("key", "(null)", '"k"')]
    assert "pid" in sys_diff.equal and "src" not in sys_diff.equal
    assert [t for t, _ in row.records_only_ebpf] == ["OBJ_PID"]
    table = format_table(cmp, lambda nr: {49: "bind"}.get(nr))
    assert 'differs    SYSCALL.key: eBPF (null) | audit "k"' in table
    assert "saddr_fam=inet laddr=127.0.0.1 lport=48616" in table  # decoded as ausearch -i
    assert "-98 EADDRINUSE" in table


def test_reasons_for_one_sided_events():
    facts = Facts(no_audit_context={100}, audit_lost=3, ebpf_lost=0, audit_broader="--port")
    cmp = compare(
        [ev("ebpf", 1000, pid=100), ev("ebpf", 2000, pid=200), ev("audit", 3000, pid=300)], facts
    )
    reasons = {r.pid: (r.kind, r.reason) for r in cmp.rows}
    assert reasons[100][0] == "ebpf-only" and "no audit context" in reasons[100][1]
    assert "lost 3" in reasons[200][1]
    assert reasons[300][0] == "audit-only" and "--port" in reasons[300][1]
    assert cmp.to_json()["counts"] == {"pair": 0, "ebpf-only": 2, "audit-only": 1}


def test_syscall_filter_and_non_syscall_events():
    other = Event(1, 0, 5, [Record("CONFIG_CHANGE", body='op=add_rule key="k" res=1')], "audit")
    cmp = compare([ev("audit", 1000), ev("ebpf", 1002), other], Facts(), syscalls={62})
    assert cmp.rows == []
    assert len(compare([ev("audit", 1000), ev("ebpf", 1002), other], Facts(), {49}).rows) == 1
