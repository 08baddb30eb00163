"""Shared fixtures and the `kernel` marker's skip rules.

- `require_root`: fixture that skips the test unless it runs as root.
- `@pytest.mark.kernel` tests are skipped, with the reason, unless root with kernel BTF.
- `@pytest.mark.kprobe` tests are skipped, with the reason, unless root on a kernel with
  kprobes (detected as `audtrace doctor` does); vagrant/vm-lane runs them on a stock kernel.
- `@pytest.mark.systemd` tests are skipped, with the reason, unless systemd is PID 1;
  vagrant/vm-lane's `systemd` run hands its guest's PID 1 to systemd and sets
  AUDTRACE_REQUIRE_SYSTEMD=1, which turns that skip into a failure.
- Every session checks that it left kernel audit as it found it (enabled flag and rules).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# property tests check logic, not speed: no per-example deadline on a loaded machine
settings.register_profile("audtrace", deadline=None)
settings.load_profile("audtrace")

BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")


def _kernel_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not BTF_VMLINUX.exists():
        return f"needs kernel BTF ({BTF_VMLINUX} is missing)"
    return None


def _kprobe_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    from audtrace.tracer.ebpf.features import kprobes_available

    ok, why = kprobes_available()
    return None if ok else f"needs kprobes, this kernel has none ({why}); runs in vagrant/vm-lane"


def _systemd_skip_reason() -> str | None:
    """sd_booted(3)'s test: /run/systemd/system exists only where systemd is PID 1."""
    if Path("/run/systemd/system").is_dir():
        return None
    try:
        init = Path("/proc/1/comm").read_text().strip()
    except OSError:
        init = "unknown"
    return (f"needs systemd as PID 1 (PID 1 here is {init!r}); runs in vagrant/vm-lane"
            " (--systemd)")


def pytest_report_header(config: pytest.Config) -> list[str]:
    reason = _kernel_skip_reason()
    kprobe = _kprobe_skip_reason()
    return [
        f"kernel: {os.uname().release}, euid {os.geteuid()}, "
        f"BTF {'yes' if BTF_VMLINUX.exists() else 'no'}, "
        f"kernel tests: {'skipped, ' + reason if reason else 'run'}, "
        f"kprobe tests: {'skipped, ' + kprobe if kprobe else 'run'}, "
        f"systemd tests: {'skipped' if _systemd_skip_reason() else 'run'}"
    ]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        reason = _kernel_skip_reason()
        if reason:
            pytest.skip(f"kernel test: {reason}")
    if item.get_closest_marker("kprobe") is not None:
        reason = _kprobe_skip_reason()
        if reason:
            pytest.skip(f"kprobe test: {reason}")
    if item.get_closest_marker("systemd") is not None:
        reason = _systemd_skip_reason()
        if reason and os.environ.get("AUDTRACE_REQUIRE_SYSTEMD") == "1":
            pytest.fail(f"systemd test: {reason}, though AUDTRACE_REQUIRE_SYSTEMD=1",
                        pytrace=False)
        if reason:
            pytest.skip(f"systemd test: {reason}")


@pytest.fixture
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


# ---- "never leave the system changed", checked ------------------------------------------------


def _auditctl(*args: str) -> str:
    return subprocess.run(
        ["auditctl", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def _audit_state() -> tuple[str, str]:
    """(enabled flag, rule list text) as auditctl reports them."""
    enabled = next(
        (line.split()[1] for line in _auditctl("-s").splitlines() if line.startswith("enabled ")),
        "?",
    )
    return enabled, _auditctl("-l")


@pytest.fixture(scope="session", autouse=True)
def audit_state_unchanged() -> Iterator[None]:
    """Fails the session (as an error in the last test's teardown) if the tests changed the
    kernel audit enabled flag or rules."""
    if os.geteuid() != 0 or shutil.which("auditctl") is None:
        yield  # nothing a non-root session could change
        return
    before = _audit_state()
    yield
    after = _audit_state()
    if after != before:
        # Not restored automatically: another session on the same machine may own the change.
        pytest.fail(
            "tests left kernel audit changed (put it back with `auditctl -D` and "
            f"`auditctl -e {before[0]}`, then re-add any rule listed before):\n"
            f"  enabled {before[0]} -> {after[0]}\n"
            f"  rules before:\n{before[1]}  rules after:\n{after[1]}",
            pytrace=False,
        )
