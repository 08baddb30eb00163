"""eBPF serials of real runs: 32 bits, one slot per run, a clear line when none is free."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from audtrace.compat.record import parse_log
from audtrace.tracer import serials
from helpers import REPO, act, wait_for

pytestmark = pytest.mark.kernel


def test_two_runs_at_once_number_from_different_slots(tracers, tmp_path):
    a = tracers(["kill", "--sig", "USR2"], tmp_path / "a.log")
    b = tracers(["kill", "--sig", "USR2"], tmp_path / "b.log")
    sender = act("kill", 12)["pid"]
    assert wait_for(lambda: f" pid={sender} " in a.text() and f" pid={sender} " in b.text(), 20)
    assert a.stop() == 0 and b.stop() == 0
    slots = set()
    for t in (a, b):
        evs = [ev for ev in parse_log(t.text().splitlines()) if ev.source == "ebpf"]
        assert evs and all(serials.KERNEL_LIMIT <= ev.serial < 2**32 for ev in evs)
        slots |= {ev.serial >> serials.COUNTER_BITS & (serials.SLOTS - 1) for ev in evs}
    assert len(slots) == 2


HOLD_ALL = r"""
import json, socket, subprocess, sys
held = []
for n in range(64):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0audtrace/serial-slot/%d" % n)
    held.append(s)
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
print(json.dumps({"rc": r.returncode, "stderr": r.stderr}))
"""


def test_every_slot_taken_is_one_line(tmp_path):
    """In a network namespace of its own (slots are per namespace), every slot held: the
    run stops before it sets anything up, with one line."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    out = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", HOLD_ALL, str(REPO / "audtrace"),
         "kill", "--duration", "5", "-o", str(tmp_path / "x.log")],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["rc"] == 1
    assert r["stderr"].splitlines() == [
        "audtrace: all 64 serial slots are taken: 64 audtrace runs are writing in this "
        "network namespace already (each holds the abstract socket @audtrace/serial-slot/N)"]
    assert not (tmp_path / "x.log").exists()
