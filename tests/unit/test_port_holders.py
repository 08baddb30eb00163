"""The pure part of the bind-conflict diagnosis: ranges, ephemeral judgement, the fix."""

from __future__ import annotations

import socket

from audtrace.tracer.bind.holders import (
    Diagnosis,
    HeldSocket,
    Proc,
    may_conflict,
    parse_port_list,
    port_in_list,
    reserved_with,
)
from audtrace.tracer.bind.report import summary_lines
from audtrace.tracer.subcommands.bind import addr_match


def held(state: str, rport: int, proto: str = "tcp") -> HeldSocket:
    return HeldSocket(
        proto=proto,
        family=socket.AF_INET,
        state=state,
        laddr="10.90.6.134",
        lport=48616,
        raddr="10.1.1.1" if rport else "0.0.0.0",
        rport=rport,
        inode=99,
        uid=0,
        how="sock_diag",
        owners=[Proc(4242, b"curl", b"curl\0http://x", 0, 1000, 3)],
    )


def test_reserved_ports_syntax():
    assert parse_port_list("8080,9000-9010\n") == [(8080, 8080), (9000, 9010)]
    assert port_in_list(9005, "8080,9000-9010") and not port_in_list(9011, "8080,9000-9010")
    assert not port_in_list(1, "")
    # writing the sysctl replaces the list: the fix keeps what is there
    assert reserved_with(48616, "8080,9000-9010") == "8080,9000-9010,48616"
    assert reserved_with(48616, "") == "48616"


def test_the_outage_client_held_ephemeral_port():
    d = Diagnosis(48616, 4026531840, None, [held("ESTABLISHED", 443)], (32768, 60999), "")
    assert d.in_range and d.ephemeral and not d.reserved
    assert d.fix()[0] == "sysctl -w net.ipv4.ip_local_reserved_ports=48616"
    assert "/etc/sysctl.d/" in d.fix()[1]
    text = "\n".join(summary_lines("10.90.6.134:48616", "pid 1 (svc)", d, d.holders))
    assert "held by pid 4242 (curl) `curl http://x`" in text
    assert "-> 10.1.1.1:443" in text and "ephemeral port" in text
    assert "prevent it: sysctl -w net.ipv4.ip_local_reserved_ports=48616" in text


def test_no_fix_for_a_listener_or_reserved_or_out_of_range():
    listener = Diagnosis(48616, 1, None, [held("LISTEN", 0)], (32768, 60999), "")
    assert listener.in_range and not listener.ephemeral and listener.fix() == []
    assert "configuration conflict" in "\n".join(
        summary_lines("x", "y", listener, listener.holders)
    )
    reserved = Diagnosis(48616, 1, None, [held("ESTABLISHED", 443)], (32768, 60999), "48000-49000")
    assert reserved.reserved and reserved.fix() == []
    outside = Diagnosis(8080, 1, None, [held("ESTABLISHED", 443)], (32768, 60999), "")
    assert not outside.ephemeral and outside.fix() == []


def test_fix_inside_a_named_namespace():
    d = Diagnosis(40123, 7, "test-ns", [held("ESTABLISHED", 8080)], (40123, 40124), "")
    assert d.fix()[0].startswith("ip netns exec test-ns sysctl -w")


def test_may_conflict():
    v4, v6 = socket.AF_INET, socket.AF_INET6
    assert may_conflict("127.0.0.1", v4, "127.0.0.1", v4)
    assert not may_conflict("127.0.0.1", v4, "127.0.0.2", v4)
    assert may_conflict("127.0.0.1", v4, "0.0.0.0", v4)
    assert may_conflict("127.0.0.1", v4, "::", v6)  # dual-stack wildcard
    assert not may_conflict("::1", v6, "127.0.0.1", v4)
    assert may_conflict("::ffff:127.0.0.1", v6, "127.0.0.1", v4)


def test_addr_match_words_are_the_sockaddr_bytes():
    # 127.0.0.1 lies in memory as 7f 00 00 01: read as a little-endian u32, 0x0100007f
    assert "(w)[0] == 0x100007fU" in addr_match(["127.0.0.1"])
    assert addr_match([]) == "(1)"


def test_audit_filter_applies_port_addr_comm_to_relayed_events():
    from audtrace.compat.record import Event, Record
    from audtrace.tracer.subcommands.bind import BindRequest, audit_filter

    def event(saddr: str, comm: str = '"svc"') -> Event:
        return Event(1, 0, 1, [Record("SYSCALL", body=f"syscall=49 pid=5 comm={comm}"),
                               Record("SOCKADDR", body=f"saddr={saddr}")], "audit")

    v4 = "0200BDE87F0000010000000000000000"                   # 127.0.0.1:48616
    v6 = "0A00BDE8000000000000000000000000000000000000000100000000"   # [::1]:48616
    assert audit_filter(BindRequest()) is None
    keep = audit_filter(BindRequest(ports=[48616], addrs=["::1"]))
    assert keep(event(v6)) and not keep(event(v4))
    assert not audit_filter(BindRequest(ports=[80]))(event(v6))
    by_comm = audit_filter(BindRequest(comms=["svc"]))
    assert by_comm(event(v4)) and not by_comm(event(v4, '"other"'))
    assert by_comm(event(v4, "737663"))                        # the hex form of "svc"
