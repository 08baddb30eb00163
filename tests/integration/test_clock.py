"""`audtrace clock` against the kernel's own records of the same time changes.

The actor sets the clock to the time it is anyway (computed from CLOCK_MONOTONIC just
before each call, so the system clock ends where it would have been, less the microseconds
the calls take), makes a no-op ADJ_TICK, an adjtimex read, and failing calls (EINVAL,
EFAULT, ENOTTY, EPERM as nobody)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from audtrace.compat.interpret import format_interpreted
from audtrace.compat.record import parse_log
from catalogue import ausearch, diff_records, first, select, stamps_close
from helpers import wait_for

pytestmark = pytest.mark.kernel

KEY = "audtrace-clock-test"
ACTOR = Path(__file__).with_name("clock_actor.py")
# glibc's adjtimex() is clock_adjtime(CLOCK_REALTIME, ...)
NR = {"clock_settime": 227, "settimeofday": 164, "adjtimex": 159, "clock_adjtime": 305, "ioctl": 16}
NS = 10**9


def act(*prefix: str, mode: str) -> dict:
    out = subprocess.run(
        [*prefix, "/usr/bin/python3", str(ACTOR), mode], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def injected(rec: dict[str, str]) -> int:
    return int(rec["sec"]) * NS + int(rec["nsec"])


def wall(text: str) -> int:
    """A quoted "sec.nsec": unquoted, the audit tools would take it for hex text."""
    assert text[0] == text[-1] == '"', text
    sec, frac = text.strip('"').split(".")
    return int(sec) * NS + int(frac)


def test_time_changes_match_kernel_audit(tracers, tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    log = tmp_path / "clock.log"
    tracer = tracers(["clock", "--source", "both", "-k", KEY], log)
    d = act(mode="set")
    nobody = act("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", mode="nobody")
    assert d["ret"] == {
        "clock_settime": 0,
        "settimeofday": 0,
        "adjtimex_read": d["ret"]["adjtimex_read"],
        "adjtimex_tick": d["ret"]["adjtimex_read"],
        "einval": -22,
        "efault": -14,
        "rtc": -25,
    }
    assert nobody["ret"] == {"eperm": -1}

    def calls(text: str, src: int) -> list:
        return sorted(
            ev
            for p in (d["pid"], nobody["pid"])
            for nr in NR.values()
            for ev in select(text, KEY, p, nr)[src]
        )

    # kernel audit: 7 calls by the actor (with the adjtimex read) + EPERM; eBPF: no read
    assert wait_for(
        lambda: len(calls(tracer.text(), 0)) >= 7 and len(calls(tracer.text(), 1)) >= 8, 20
    )
    assert tracer.stop() == 0
    text = log.read_text()
    ebpf, audit = calls(text, 0), calls(text, 1)
    assert len(ebpf) == 7 and len(audit) == 8
    reads = [ev for ev in audit if first(ev[1], "SYSCALL")["syscall"] == "305"][:1]
    audit = [ev for ev in audit if ev not in reads]  # the read, left out by eBPF
    exits = []
    for (e_id, e_recs), (a_id, a_recs) in zip(ebpf, audit, strict=True):
        assert stamps_close(e_id, a_id)
        e, a = first(e_recs, "SYSCALL"), first(a_recs, "SYSCALL")
        assert diff_records(e, a, skip={"key"}) == []
        exits.append((e["syscall"], e["exit"]))
        e_inj, a_inj = first(e_recs, "TIME_INJOFFSET"), first(a_recs, "TIME_INJOFFSET")
        assert (e_inj is None) == (a_inj is None), exits[-1]
        if a_inj is not None:
            # eBPF's "now" is taken at entry, the kernel's a little later: microseconds
            assert 0 <= injected(e_inj) - injected(a_inj) < 1_000_000, (e_inj, a_inj)
            assert abs(injected(a_inj)) < 100_000_000  # the clock was not moved
        other = first(e_recs, "KERNEL_OTHER")
        # a setting to "now" moves the clock back by the call's own microseconds
        assert abs(wall(other["new"]) - wall(other["old"])) < 50_000_000
    assert exits == [
        ("227", "0"),
        ("164", "0"),
        ("305", "5"),
        ("227", "-22"),
        ("227", "-14"),
        ("16", "-25"),
        ("227", "-1"),
    ]
    first_set = first(ebpf[0][1], "KERNEL_OTHER")
    assert wall(first_set["asked"]) == d["asked"]
    assert first(ebpf[2][1], "KERNEL_OTHER")["modes"] == "0x4000"
    assert first(ebpf[5][1], "KERNEL_OTHER")["rtc"] == '"2026-01-01T12:00:00"'

    interp = ausearch(log, "-i", "-p", str(d["pid"]), "-sc", "clock_settime")
    assert interp.count("type=TIME_INJOFFSET") == 2 and interp.count("exit=EINVAL") == 2
    # the wall times read as written, in ausearch -i and in audtrace's own interpretation
    assert f"old={first_set['old']} new={first_set['new']} " in interp
    ours = [ev for ev in parse_log(text.splitlines())
            if any(r.get("old") == first_set["old"] for r in ev.records)]
    mine = format_interpreted(ours[0])
    sec, frac = first_set["old"].strip('"').split(".")
    local = time.strftime("%x %T", time.localtime(int(sec)))
    assert f" old={local}.{frac} new=" in mine, mine
    interp = ausearch(log, "-i", "-p", str(d["pid"]), "-sc", "settimeofday")
    assert interp.count("type=TIME_INJOFFSET") == 2
    assert ausearch(log, "-i", "-sc", "ioctl", "-p", str(d["pid"])).count("exit=ENOTTY") == 2
