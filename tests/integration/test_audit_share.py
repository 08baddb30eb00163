"""Two audtrace runs on kernel audit at once: the first out leaves the flag and the shared
rules to the second, the last out puts the machine back as it was.

Both runs make the same request, so they want the same rules; the second finds them added by
the first. Checked with auditctl, and by the second run still relaying the kernel's records
after the first has gone (the way the flaw showed: audit turned off under it). The same for
a tracefs mount the first run made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import act, audit_enabled, audit_rules, tracing_mounts, wait_for

pytestmark = pytest.mark.kernel

ARGS = ["kill", "--sig", "12", "--source", "audit"]
REGISTRY = Path("/run/audtrace/journal.json")


def relayed(tracer, pid: int) -> bool:
    return f" pid={pid} " in tracer.text()


@pytest.mark.parametrize("first_ends", ["SIGTERM", "SIGKILL"])
def test_first_run_out_leaves_audit_to_the_second(tracers, tmp_path, first_ends):
    enabled, rules = audit_enabled(), audit_rules()
    first = tracers(ARGS, tmp_path / "first.log")
    second = tracers(ARGS, tmp_path / "second.log")
    assert REGISTRY.exists()
    assert audit_enabled() == "1" and "a1=0xC" in audit_rules()
    if first_ends == "SIGKILL":
        first.proc.kill()       # no clean-up at all: the second must not depend on one
        first.proc.wait(timeout=30)
    else:
        assert first.stop() == 0
    # still on, the rules still there, and the second still sees what they record
    assert audit_enabled() == "1" and "a1=0xC" in audit_rules()
    d = act("kill", 12)
    assert wait_for(lambda: relayed(second, d["pid"]), 15), second.text()
    assert second.stop() == 0
    assert audit_enabled() == enabled and audit_rules() == rules
    assert not REGISTRY.exists() and not REGISTRY.parent.exists()



def tracefs_mounted() -> bool:
    return any(m.split()[1:3] == ["/sys/kernel/tracing", "tracefs"] for m in tracing_mounts())


def test_tracefs_mounted_by_the_first_run_stays_for_the_second(tracers, tmp_path):
    """The first eBPF run mounts tracefs, the second finds it there and holds it too: the
    first out leaves it, the last out unmounts it."""
    if tracefs_mounted() or Path("/sys/kernel/tracing/events").is_dir():
        pytest.skip("tracefs was mounted when the test started: no run of ours mounts it")
    mounts = tracing_mounts()
    first = tracers(["kill", "--sig", "12"], tmp_path / "first.log")
    second = tracers(["kill", "--sig", "12"], tmp_path / "second.log")
    assert any(line.startswith("audtrace: mounted tracefs") for line in first.stderr)
    assert not any(line.startswith("audtrace: mounted tracefs") for line in second.stderr)
    assert first.stop() == 0
    assert tracefs_mounted()
    assert second.stop() == 0
    assert tracing_mounts() == mounts
    assert not REGISTRY.exists()
