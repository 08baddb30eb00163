"""32-bit rules (`-F arch=b32`, and the 32-bit part of a rule without `-F arch`) run in eBPF
on the raw syscall tracepoints, compared with kernel audit running the same rules, for real
32-bit programs (gcc -m32) and for a 64-bit program making i386 calls by `int $0x80`."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, wait_for
from test_rules import check_same, events, syscalls_of

pytestmark = pytest.mark.kernel

SOURCE = Path(__file__).with_name("compat32.c")
KEYS = {"b32-kill", "b32-getpgid", "b32-exit", "b64-kill", "any-arch"}


def build(tmp_path: Path, name: str, *flags: str) -> Path:
    out = tmp_path / name
    r = subprocess.run(["cc", *flags, "-O1", "-o", str(out), str(SOURCE)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cc {' '.join(flags)} failed (gcc-multilib?): {r.stderr}"
    return out


@pytest.fixture
def programs(tmp_path):
    if platform.machine() != "x86_64":
        pytest.skip("32-bit calls are traced in eBPF on x86_64 only")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    tmp_path.chmod(0o755)
    return {"m32": build(tmp_path, "compat32", "-m32"),
            "int80": build(tmp_path, "int80", "-DINT80")}


def rule_file(tmp_path: Path, m32: Path) -> Path:
    f = tmp_path / "compat.rules"
    f.write_text("\n".join([
        "-a always,exit -F arch=b32 -S kill -F a1=15 -k b32-kill",
        "-a always,exit -F arch=b32 -S getpgid -F a0=0x7ffff123 -k b32-getpgid",
        f"-a always,exit -F arch=b32 -S exit_group -F exe={m32} -k b32-exit",
        "-a always,exit -F arch=b64 -S kill -F a1=15 -k b64-kill",
        # no -F arch: x86_64's getpid and the i386 call of the same number (39, mkdir)
        "-a always,exit -S getpid -F a0=0xfffff124 -k any-arch",
    ]) + "\n")
    return f


def run(program: Path) -> int:
    out = subprocess.run([str(program)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def test_32_bit_rules_are_placed_in_ebpf(programs, tmp_path):
    rules = rule_file(tmp_path, programs["m32"])
    out = subprocess.run([str(REPO / "audtrace"), "rules", "-R", str(rules), "--explain"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    where = [ln.split()[2] for ln in out.stdout.splitlines() if ln.startswith("rule ")]
    assert where == ["ebpf"] * 5, out.stdout
    assert "kernel audit rules" not in out.stdout, out.stdout
    assert "32-bit calls" in out.stdout, out.stdout


def test_32_bit_calls_match_kernel_audit(tracers, programs, tmp_path):
    log = tmp_path / "both.log"
    rules = rule_file(tmp_path, programs["m32"])
    t = tracers(["rules", "-R", str(rules), "--source", "both"], log)
    tracing = next(ln for ln in t.stderr if ln.startswith("audtrace: tracing"))
    assert "via raw tracepoints sys_enter/sys_exit (32-bit rules run in eBPF" in tracing
    m32, int80 = run(programs["m32"]), run(programs["int80"])
    # m32: kill, getpgid, mkdir, exit_group; int80: kill, getpgid, mkdir (i386), kill (x86_64)
    assert wait_for(lambda: t.text().count("src=ebpf") >= 2 * 8, 30)
    assert t.stop() == 0
    text = log.read_text()
    want = {m32: ("b32-kill", "b32-getpgid", "any-arch", "b32-exit"),
            int80: ("b32-kill", "b32-getpgid", "any-arch", "b64-kill")}
    for pid, keys in want.items():
        for key in keys:
            check_same(text, pid, key, KEYS)
    evs = events(text)
    for pid, keys in want.items():
        for key in set(KEYS) - set(keys):       # nothing else, from either source
            assert not syscalls_of(evs, pid, key, "ebpf"), (pid, key)
            assert not syscalls_of(evs, pid, key, "audit"), (pid, key)
    arch = {k: syscalls_of(evs, int80, k, "ebpf")[0][1][0][1]["arch"]
            for k in ("b32-kill", "b64-kill")}
    assert arch == {"b32-kill": "40000003", "b64-kill": "c000003e"}
