"""Every BPF family compiles and passes the verifier with offsets from the header tree.

The no-BTF path puts the header tree's declarations in the same unit as our programs, so a
name of ours that a kernel header also defines breaks it. The stock-kernel lane runs kill and
bind this way on matching headers; here every family at least compiles and loads (on this
kernel the headers may be another version's, so events are not checked).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import REPO

pytestmark = pytest.mark.kernel

RUNS = {
    "kill": ["kill", "--sig", "15,12"],
    "bind": ["bind"],
    "net": ["net"],
    "exec": ["exec"],
    "exit": ["exit"],
    "ioctl": ["ioctl"],
    "clock": ["clock"],
    "latency": ["latency", "--syscall", "nanosleep"],
    "rules": ["rules", "-a", "always,exit", "-F", "arch=b64", "-S", "openat", "-F", "success=0"],
    "trace": ["trace", "--", "/bin/true"],
}


@pytest.mark.parametrize("args", list(RUNS.values()), ids=list(RUNS))
def test_family_loads_with_header_offsets(args):
    timing = [] if args[0] == "trace" else ["--duration", "0.2"]
    out = subprocess.run([str(REPO / "audtrace"), *args[:1], *timing, *args[1:]],
                         capture_output=True, text=True, cwd=REPO, timeout=180,
                         env={**os.environ, "AUDTRACE_OFFSETS": "headers"})
    assert out.returncode == 0, out.stderr
    assert "offsets from headers" in out.stderr, out.stderr
