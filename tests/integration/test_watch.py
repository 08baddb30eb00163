"""`audtrace watch`: audit's file watch through kernel audit; writes, appends, renames,
deletes and attribute changes of a watched file, each found by the real ausearch, and a
read left out by `-p wa`. eBPF is refused with its reason (it cannot be exact here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from catalogue import ausearch, events, first
from helpers import REPO, wait_for

pytestmark = pytest.mark.kernel

KEY = "audtrace-watch-test"
ACTOR = r"""
import json, os, sys
f = sys.argv[1]
with open(f, "w") as fh: fh.write("a\n")        # write (create)
with open(f, "a") as fh: fh.write("b\n")        # append
with open(f) as fh: fh.read()                   # read: not asked for
os.chmod(f, 0o600)                              # attribute change
os.rename(f, f + ".old"); os.rename(f + ".old", f)
os.unlink(f)
print(json.dumps({"pid": os.getpid()}))
"""
# syscall -> (what it did, the nametypes of its PATH records)
EXPECT = [("openat", {"PARENT", "CREATE"}), ("openat", {"NORMAL"}), ("chmod", {"NORMAL"}),
          ("rename", {"PARENT", "DELETE"}), ("rename", {"PARENT", "CREATE"}),
          ("unlink", {"PARENT", "DELETE"})]


def test_watch_writes_appends_renames_deletes(tracers, tmp_path):
    watched = tmp_path / "watched"
    log = tmp_path / "watch.log"
    tracer = tracers(["watch", str(watched), "-p", "wa", "-k", KEY], log)
    assert any("watch on kernel audit" in line for line in tracer.stderr)
    out = subprocess.run([sys.executable, "-c", ACTOR, str(watched)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pid = json.loads(out.stdout)["pid"]

    def mine(text: str) -> list:
        return [recs for _i, recs in sorted(events(text).items())
                if (first(recs, "SYSCALL") or {}).get("pid") == str(pid)]

    assert wait_for(lambda: len(mine(tracer.text())) >= len(EXPECT), 20)
    assert tracer.stop() == 0
    evs = mine(log.read_text())
    assert len(evs) == len(EXPECT)      # the read is not there
    interp = ausearch(log, "-i", "-k", KEY, "-p", str(pid))
    for recs, (_name, nametypes) in zip(evs, EXPECT, strict=True):
        types = [t for t, _ in recs]
        assert types[0] == "SYSCALL" and "CWD" in types and types[-1] == "PROCTITLE", types
        assert {f["nametype"] for t, f in recs if t == "PATH"} >= nametypes
        assert first(recs, "SYSCALL")["key"] == f'"{KEY}"'
    names = re.findall(r"type=SYSCALL .* syscall=(\w+) ", interp)
    assert names == [name for name, _t in EXPECT]
    by_file = ausearch(log, "-f", str(watched), "-i")
    assert by_file.count("type=SYSCALL") == len(EXPECT)


def test_ebpf_source_is_refused_with_the_reason():
    out = subprocess.run([str(REPO / "audtrace"), "watch", "/tmp/x", "--source", "ebpf"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "eBPF cannot watch exactly" in out.stderr
