"""Fixtures of the integration tests."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from helpers import Tracer, start_audtrace


@pytest.fixture
def tracers():
    """Every audtrace started through it is stopped at the end, whatever happens."""
    started: list[Tracer] = []

    def _start(args: list[str], output: Path, env: dict[str, str] | None = None) -> Tracer:
        t = start_audtrace(args, output, env=env)
        started.append(t)
        return t

    yield _start
    for t in started:
        if t.proc.poll() is None:
            t.proc.send_signal(signal.SIGTERM)
            try:
                t.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                t.proc.kill()
