"""The real output of every subcommand, for the tests that read it with the audit tools.

`record_outputs(dir)` runs each tracing subcommand once, for real, with the actions that
make every record type it writes (a kill and a crash, a bind conflict with a holder, an
exec, exits and signal deaths, connects, ioctls, a clock setting, slow calls, rule and
watch events...), with `--source both` where the subcommand has a kernel audit side, so the
logs also hold the kernel's relayed events (CONFIG_CHANGE included). Each log is raw, as
audtrace writes it by default and as auditd hands records to its plugins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO, Tracer, start_audtrace, wait_for

HERE = Path(__file__).parent
KEY = "audtrace-outputs"
PY = sys.executable


@dataclass
class Output:
    name: str           # the subcommand
    log: Path
    merged: bool        # kernel audit's relayed events are in it too


def _py(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          **kw)


def _actor(name: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([PY, str(HERE / name), *args], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
                                          **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _both(text: str, *needles: str) -> bool:
    """Every needle in an eBPF record and in a kernel one."""
    lines = text.splitlines()
    return all(any(n in ln and ln.endswith(" src=ebpf") for ln in lines)
               and any(n in ln and not ln.endswith(" src=ebpf") for ln in lines)
               for n in needles)


# ---- the actions of each subcommand -------------------------------------------------------
def _kill(t: Tracer, _d: Path) -> Callable[[], bool]:
    _actor("signal_actor.py", "kill", "15")
    _actor("signal_actor.py", "tgkill", "12")
    _py("import ctypes; ctypes.string_at(0)")                  # SIGSEGV: the kernel's
    _py("import os, signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL);"
        "r, w = os.pipe(); os.close(r); os.write(w, b'x')")    # SIGPIPE
    return lambda: (_both(t.text(), "syscall=62 ", "type=OBJ_PID")
                    and "op=signal-generate" in t.text() and "op=signal-receive" in t.text())


def _bind(t: Tracer, _d: Path) -> Callable[[], bool]:
    p = subprocess.Popen([PY, str(HERE / "bind_actor.py"), "conflict", "tcp", "127.0.0.1"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "BIND_ACTOR_LINGER": "stdin"})
    try:
        json.loads(p.stdout.readline())
        wait_for(lambda: "op=port-held" in t.text(), 20)
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    return lambda: "op=port-held" in t.text() and _both(t.text(), "type=SOCKADDR")


def _exec(t: Tracer, _d: Path) -> Callable[[], bool]:
    subprocess.run(["/bin/echo", "hello", "a b", 'q"uote'], stdout=subprocess.DEVNULL)
    _py("import os\ntry: os.execv('/nonexistent-audtrace', ['x'])\nexcept OSError: pass")
    return lambda: _both(t.text(), "type=EXECVE", "type=CWD", "type=PATH")


def _exit(t: Tracer, _d: Path) -> Callable[[], bool]:
    subprocess.run(["/bin/sh", "-c", "exit 3"])
    _py("import os, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); os.abort()")
    sleeper = subprocess.Popen(["sleep", "30"])
    sleeper.terminate()
    sleeper.wait()
    return lambda: _both(t.text(), "syscall=231 ", "type=ANOM_ABEND")


def _net(t: Tracer, _d: Path) -> Callable[[], bool]:
    _actor("net_actor.py")
    return lambda: _both(t.text(), "syscall=42 ", "type=SOCKADDR")


IOCTL = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(64)
f = os.open(os.devnull, os.O_RDONLY)
r, w = os.pipe(); os.write(w, b"abc")
libc.ioctl(f, ctypes.c_ulong(0x5401), ctypes.c_void_p(ctypes.addressof(buf)))
libc.ioctl(r, ctypes.c_ulong(0x541B), ctypes.c_void_p(ctypes.addressof(buf)))
"""


def _ioctl(t: Tracer, _d: Path) -> Callable[[], bool]:
    _py(IOCTL)
    return lambda: _both(t.text(), "syscall=16 ") and "type=PATH" in t.text()


def _clock(t: Tracer, _d: Path) -> Callable[[], bool]:
    subprocess.run(["/usr/bin/python3", str(HERE / "clock_actor.py"), "set"],
                   capture_output=True, timeout=30, check=True)
    return lambda: _both(t.text(), "type=TIME_INJOFFSET") and "type=KERNEL_OTHER" in t.text()


def _latency(t: Tracer, _d: Path) -> Callable[[], bool]:
    _py("import ctypes; ts = (ctypes.c_long * 2)(0, 5_000_000);"
        "[ctypes.CDLL(None).syscall(35, ts, None) for _ in range(3)]")
    return lambda: "latency_ns=" in t.text()


def _rules(t: Tracer, d: Path) -> Callable[[], bool]:
    _actor("rules_actor.py", "getpgid", "4242421")
    _actor("rules_actor.py", "write", str(d / "watched"))
    return lambda: _both(t.text(), "syscall=121 ") and 'key="outputs-watch"' in t.text()


def _watch(t: Tracer, d: Path) -> Callable[[], bool]:
    _actor("rules_actor.py", "write", str(d / "watched"))
    return lambda: "type=PATH" in t.text()


def _compare(t: Tracer, _d: Path) -> Callable[[], bool]:
    _actor("signal_actor.py", "kill", "15")
    return lambda: _both(t.text(), "syscall=62 ")


def _rules_args(d: Path) -> list[str]:
    f = d / "outputs.rules"
    f.write_text("-a always,exit -F arch=b64 -S getpgid -F a0=4242421 -k outputs-rules\n"
                 f"-w {d / 'watched'} -p wa -k outputs-watch\n")
    return ["rules", "-R", str(f), "--source", "both"]


# name -> (arguments before -o, whether the log holds kernel events, the actions)
RUNS: dict[str, tuple[Callable[[Path], list[str]], bool, Callable]] = {
    "kill": (lambda d: ["kill", "--source", "both", "--sig", "TERM,USR2,SEGV,PIPE,CHLD",
                        "-k", KEY], True, _kill),
    "bind": (lambda d: ["bind", "--source", "both", "-k", KEY], True, _bind),
    "exec": (lambda d: ["exec", "--source", "both", "-k", KEY], True, _exec),
    "exit": (lambda d: ["exit", "--source", "both", "-k", KEY], True, _exit),
    "net": (lambda d: ["net", "--source", "both", "-k", KEY], True, _net),
    "ioctl": (lambda d: ["ioctl", "--request", "TCGETS,FIONREAD", "--source", "both",
                         "-k", KEY], True, _ioctl),
    "clock": (lambda d: ["clock", "--source", "both", "-k", KEY], True, _clock),
    "latency": (lambda d: ["latency", "--syscall", "nanosleep", "--slower-than", "1ms",
                           "-k", KEY], False, _latency),
    "rules": (_rules_args, True, _rules),
    "watch": (lambda d: ["watch", str(d / "watched"), "-p", "wa", "-k", KEY], True, _watch),
    "compare": (lambda d: ["compare", "kill", "--sig", "TERM", "-k", KEY], True, _compare),
}


def record_outputs(root: Path) -> list[Output]:
    """Every subcommand's real output, one log each (and `trace`, which runs a command)."""
    out = []
    for name, (args, merged, action) in RUNS.items():
        d = root / name
        d.mkdir()
        os.chmod(d, 0o755)
        (d / "watched").write_text("")
        log = d / f"{name}.log"
        t = start_audtrace(args(d), log)
        try:
            done = action(t, d)
            assert wait_for(done, 30), f"{name}: not every record came:\n{t.text()[-3000:]}"
        finally:
            if t.proc.poll() is None:
                t.stop()
        assert t.proc.returncode == 0, (name, t.stderr)
        out.append(Output(name, log, merged))
    log = root / "trace.log"
    r = subprocess.run([str(REPO / "audtrace"), "trace", "-o", str(log), "-k", KEY, "--",
                        "/bin/sh", "-c", "echo x > /dev/null; true"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    out.append(Output("trace", log, False))
    return out
