"""Helpers of the integration tests: run the real `audtrace`, run signal actors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACTOR = Path(__file__).with_name("signal_actor.py")
PYTHON = sys.executable


@dataclass
class Tracer:
    proc: subprocess.Popen
    output: Path
    stderr: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def text(self) -> str:
        return self.output.read_text() if self.output.exists() else ""


def start_audtrace(args: list[str], output: Path, timeout: float = 90) -> Tracer:
    """Start `audtrace ARGS -o OUTPUT` and return once it says it is tracing."""
    cmd = [str(REPO / "audtrace"), *args, "-o", str(output)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    tracer = Tracer(proc, output)
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            tracer.stderr.append(line.rstrip("\n"))
            if line.startswith("audtrace: tracing"):
                ready.set()
        ready.set()

    tracer._reader = threading.Thread(target=read, daemon=True)
    tracer._reader.start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        pytest.fail("audtrace did not start tracing:\n" + "\n".join(tracer.stderr))
    return tracer


def act(action: str, sig: int, *extra: str) -> dict:
    """Run signal_actor.py in a fresh process; return what it reports."""
    out = subprocess.run([PYTHON, str(ACTOR), action, str(sig), *extra], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for(pred, timeout: float = 10.0, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
