"""`audtrace ioctl` against the kernel's own records: ENOTTY (TCGETS, RTC_SET_TIME on a
regular file), success (FIONREAD on a pipe), EFAULT (FIONREAD to a bad pointer), EPERM
(FS_IOC_SETFLAGS on root's file by nobody). SYSCALL and PROCTITLE field by field; the PATH
record audit does not write is checked against stat(2) of the same file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from catalogue import ausearch, diff_records, first, select, stamps_close
from helpers import wait_for

pytestmark = pytest.mark.kernel

KEY = "audtrace-ioctl-test"
NR_IOCTL = 16
REQUESTS = "TCGETS,RTC_SET_TIME,FIONREAD,FS_IOC_SETFLAGS"
# ioctls on fds moved to 100.. so they are told apart from the interpreter's own
ACTOR = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def ioctl(fd, req, arg):
    r = libc.ioctl(fd, ctypes.c_ulong(req), ctypes.c_void_p(arg))
    return -ctypes.get_errno() if r < 0 else r
buf = ctypes.create_string_buffer(64)
out = {"pid": os.getpid(), "ret": {}}
if sys.argv[1] == "root":
    f = os.dup2(os.open(sys.argv[2], os.O_RDONLY), 100)
    r, w = os.pipe(); r = os.dup2(r, 101); os.write(w, b"abc")
    out["ret"]["tcgets"] = ioctl(f, 0x5401, ctypes.addressof(buf))
    out["ret"]["rtc_set_time"] = ioctl(f, 0x4024700A, ctypes.addressof(buf))
    out["ret"]["fionread"] = ioctl(r, 0x541B, ctypes.addressof(buf))
    out["ret"]["efault"] = ioctl(r, 0x541B, 8)
    out["fstat"] = {"file": list(os.fstat(f))[:3], "pipe": list(os.fstat(r))[:3]}
else:
    f = os.dup2(os.open(sys.argv[2], os.O_RDONLY), 102)
    out["ret"]["eperm"] = ioctl(f, 0x40086602, ctypes.addressof(buf))
print(json.dumps(out))
"""


def act(*args: str) -> dict:
    out = subprocess.run([*args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def kernel_dev(st_dev: int) -> str:
    return f"{os.major(st_dev):02x}:{os.minor(st_dev):02x}"


@pytest.fixture
def roots_file():
    """A root-owned 0644 file in a directory nobody may enter."""
    d = tempfile.mkdtemp(prefix="audtrace-ioctl.")
    os.chmod(d, 0o755)
    path = os.path.join(d, "data")
    with open(path, "w") as f:
        f.write("x")
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(d)


def test_ioctl_matches_kernel_audit(tracers, tmp_path, roots_file):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    log = tmp_path / "ioctl.log"
    tracer = tracers(["ioctl", "--request", REQUESTS, "--source", "both", "-k", KEY], log)
    root = act(sys.executable, "-c", ACTOR, "root", roots_file)
    nobody = act(
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        ACTOR,
        "nobody",
        roots_file,
    )
    assert root["ret"] == {"tcgets": -25, "rtc_set_time": -25, "fionread": 0, "efault": -14}
    assert nobody["ret"] == {"eperm": -1}
    calls = [
        (root["pid"], "64", "5401"),
        (root["pid"], "64", "4024700a"),
        (root["pid"], "65", "541b"),
        (root["pid"], "65", "541b"),
        (nobody["pid"], "66", "40086602"),
    ]

    def ours(text: str, src: int) -> list:
        evs = [
            ev
            for pid in {root["pid"], nobody["pid"]}
            for ev in select(text, KEY, pid, NR_IOCTL)[src]
        ]
        return sorted(ev for ev in evs if first(ev[1], "SYSCALL")["a0"] in ("64", "65", "66"))

    assert wait_for(
        lambda: len(ours(tracer.text(), 0)) >= 5 and len(ours(tracer.text(), 1)) >= 5, 20
    )
    assert tracer.stop() == 0
    text = log.read_text()
    ebpf, audit = ours(text, 0), ours(text, 1)
    assert len(ebpf) == len(audit) == 5
    exits = []
    for (e_id, e_recs), (a_id, a_recs), (pid, fd, req) in zip(ebpf, audit, calls, strict=True):
        assert stamps_close(e_id, a_id)
        e, a = first(e_recs, "SYSCALL"), first(a_recs, "SYSCALL")
        assert (e["pid"], e["a0"], e["a1"]) == (str(pid), fd, req)
        assert diff_records(e, a, skip={"items", "key"}) == []
        assert first(e_recs, "PROCTITLE") == {**first(a_recs, "PROCTITLE"), "src": "ebpf"}
        assert [t for t, _ in a_recs] == ["SYSCALL", "PROCTITLE"]  # audit: no PATH
        path = first(e_recs, "PATH")
        st = os.stat(roots_file) if fd != "65" else None
        if st is not None:
            assert (path["name"], path["inode"], path["dev"], path["mode"], path["ouid"]) == (
                f'"{roots_file}"',
                str(st.st_ino),
                kernel_dev(st.st_dev),
                "0" + format(st.st_mode, "o"),
                "0",
            )
        else:
            mode, ino, dev = root["fstat"]["pipe"]
            assert (path["inode"], path["dev"], path["mode"]) == (
                str(ino),
                kernel_dev(dev),
                "0" + format(mode, "o"),
            )
            assert stat.S_ISFIFO(mode)
        exits.append(e["exit"])
    assert exits == ["-25", "-25", "0", "-14", "-1"]

    interp = ausearch(log, "-i", "-p", str(root["pid"]), "-sc", "ioctl")
    assert interp.count("exit=ENOTTY(Inappropriate ioctl for device)") >= 4
    assert interp.count("exit=EFAULT(Bad address)") == 2
    assert ausearch(log, "-i", "-ui", "65534", "-sc", "ioctl").count("exit=EPERM") == 2


def test_path_filter(tracers, tmp_path, roots_file):
    other = tmp_path / "other"
    other.write_text("y")
    log = tmp_path / "path.log"
    tracer = tracers(["ioctl", "--request", "TCGETS", "--path", roots_file, "-k", KEY], log)
    a = act(sys.executable, "-c", ACTOR, "root", str(other))
    b = act(sys.executable, "-c", ACTOR, "root", roots_file)
    assert wait_for(lambda: select(tracer.text(), KEY, b["pid"], NR_IOCTL)[0], 20)
    tracer.stop()
    text = log.read_text()
    assert select(text, KEY, a["pid"], NR_IOCTL)[0] == []
    ((_i, recs),) = select(text, KEY, b["pid"], NR_IOCTL)[0]
    assert first(recs, "PATH")["name"] == f'"{roots_file}"'
