"""`audtrace net` against the kernel's own records: connect (success, ECONNREFUSED) and
accept4 (success with the peer's SOCKADDR, EAGAIN without), field by field, then ausearch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from catalogue import ausearch, diff_records, first, select, stamps_close
from helpers import wait_for

pytestmark = pytest.mark.kernel

KEY = "audtrace-net-test"
ACTOR = Path(__file__).with_name("net_actor.py")
NR_CONNECT, NR_ACCEPT4 = 42, 288


def run_actor(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(ACTOR), *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sockaddr(port: int) -> str:
    return (
        (
            socket.AF_INET.to_bytes(2, "little")
            + port.to_bytes(2, "big")
            + socket.inet_aton("127.0.0.1")
            + bytes(8)
        )
        .hex()
        .upper()
    )


def test_connect_accept_match_kernel_audit(tracers, tmp_path):
    log = tmp_path / "net.log"
    tracer = tracers(["net", "--source", "both", "-k", KEY], log)
    d = run_actor()
    assert d["refused"] == 111 and d["eagain"]
    want = {NR_CONNECT: 2, NR_ACCEPT4: 2}
    assert wait_for(
        lambda: all(
            len(s) >= n for nr, n in want.items() for s in select(tracer.text(), KEY, d["pid"], nr)
        ),
        20,
    )
    assert tracer.stop() == 0
    text = log.read_text()
    seen = {}
    for nr in want:
        ebpf, audit = select(text, KEY, d["pid"], nr)
        assert len(ebpf) == len(audit) == want[nr]
        for (e_id, e_recs), (a_id, a_recs) in zip(sorted(ebpf), sorted(audit), strict=True):
            assert stamps_close(e_id, a_id)
            assert [t for t, _ in e_recs] == [t for t, _ in a_recs]
            for (t, e), (_t, a) in zip(e_recs, a_recs, strict=True):
                assert diff_records(e, a, skip={"key"}) == [], t
            sc = first(e_recs, "SYSCALL")
            seen[(nr, sc["exit"])] = first(e_recs, "SOCKADDR")
    # the addresses themselves, against what the actor saw
    assert seen[(NR_CONNECT, "0")]["saddr"] == sockaddr(d["port"])
    assert seen[(NR_CONNECT, "-111")]["saddr"] == sockaddr(d["refused_port"])
    accepted = [v for (nr, ex), v in seen.items() if nr == NR_ACCEPT4 and ex != "-11"]
    assert accepted[0]["saddr"] == sockaddr(d["client_port"])
    assert seen[(NR_ACCEPT4, "-11")] is None  # no peer: no SOCKADDR, as in audit

    interp = ausearch(log, "-i", "-p", str(d["pid"]), "-sc", "connect")
    assert interp.count("exit=ECONNREFUSED(Connection refused)") == 2
    assert interp.count(f"lport={d['refused_port']}") == 2
    assert (
        ausearch(log, "-i", "-p", str(d["pid"]), "-sc", "accept4").count(
            f"lport={d['client_port']}"
        )
        == 2
    )


def test_port_filter(tracers, tmp_path):
    log = tmp_path / "port.log"
    tracer = tracers(["net", "--port", "1", "-k", KEY], log)
    d = run_actor("1")
    assert d["refused"] == 111
    assert wait_for(lambda: select(tracer.text(), KEY, d["pid"])[0], 20)
    tracer.stop()
    ((_i, recs),) = select(log.read_text(), KEY, d["pid"])[0]  # only the connect to port 1
    assert first(recs, "SOCKADDR")["saddr"] == sockaddr(1)
