"""The choice of syscall hooks (tracer/ebpf/hooks.py): the rule that picks them, the number
test the raw hooks run on every syscall, and the counting program's shape."""

from __future__ import annotations

import pytest
from audtrace.tracer.ebpf import hooks, syscall_rate
from audtrace.tracer.ebpf.layout import Layout

REGS = {"OFF_REGS_ARG0": 112, "OFF_REGS_ARG1": 104, "OFF_REGS_ARG2": 96, "OFF_REGS_ARG3": 56}
LAYOUT = Layout("btf", {**REGS, "OFF_TI_STATUS": 16})


def traced(macro: str, nr: int) -> bool:
    """The C macro TRACED_NR evaluated as Python (the same operators, integers only)."""
    expr = (macro.replace("(nr)", f"({nr})").replace("ULL", "").replace("(u64)", "")
            .replace("&&", " and ").replace("||", " or "))
    return bool(eval(expr))  # noqa: S307 - text made by the code under test, digits and ops


@pytest.mark.parametrize("numbers", [{62}, {0}, {63, 64}, {62, 200, 234, 297, 424, 129},
                                     set(range(0, 460, 7)), set()])
def test_the_number_test_keeps_exactly_the_traced_numbers(numbers):
    macro = hooks.traced_nr_macro(numbers)
    for nr in range(-2, 1030):
        assert traced(macro, nr) == (nr in numbers), nr


def test_every_syscall_is_one_constant():
    assert hooks.traced_nr_macro(None) == "1"


class Rate:
    def __init__(self, share: float | None) -> None:
        self.value = share

    def share(self, _numbers):
        return self.value, f"share {self.value}"


def test_few_rare_syscalls_take_the_per_syscall_tracepoints(monkeypatch):
    monkeypatch.delenv(hooks.FORCE_ENV, raising=False)
    got = hooks.choose({62, 200}, [], LAYOUT, Rate(0.001))
    assert got.kind == hooks.TRACEPOINTS
    assert got.describe() == "syscalls via per-syscall tracepoints (share 0.001)"


@pytest.mark.parametrize("numbers, missing, share, why", [
    (None, [], 0.0, "every syscall is traced"),
    ({62}, ["kill"], 0.0, "no tracepoint for kill"),
    (set(range(40)), [], 0.0, "40 syscalls: more than 32"),
    ({0, 1}, [], hooks.RAW_SHARE, "share 0.35"),
])
def test_raw_hooks_when_they_are_cheaper_or_the_only_way(monkeypatch, numbers, missing,
                                                         share, why):
    monkeypatch.delenv(hooks.FORCE_ENV, raising=False)
    got = hooks.choose(numbers, missing, LAYOUT, Rate(share))
    assert got.kind == hooks.RAW
    assert got.why.startswith(why)


def test_without_register_offsets_or_compat_state_no_raw_hooks(monkeypatch):
    monkeypatch.delenv(hooks.FORCE_ENV, raising=False)
    for layout in (Layout("btf", {"OFF_TI_STATUS": 16}), Layout("btf", dict(REGS))):
        got = hooks.choose({0, 1}, [], layout, Rate(0.9))
        assert got.kind == hooks.TRACEPOINTS
        assert got.why.startswith("raw hooks not usable")


def test_forced_hooks_and_what_cannot_be_forced(monkeypatch):
    monkeypatch.setenv(hooks.FORCE_ENV, "raw")
    assert hooks.choose({62}, [], LAYOUT, Rate(0.0)).kind == hooks.RAW
    monkeypatch.setenv(hooks.FORCE_ENV, "tracepoints")
    assert hooks.choose({0, 1}, [], LAYOUT, Rate(0.9)).kind == hooks.TRACEPOINTS
    got = hooks.choose(None, [], LAYOUT, Rate(0.9))
    assert got.kind == hooks.RAW and "refused" in got.why


def test_compat_state_per_machine():
    assert hooks.compat_defines(LAYOUT, "x86_64") == {"COMPAT_OFF": "OFF_TI_STATUS",
                                                      "COMPAT_MASK": 2}
    assert hooks.compat_defines(LAYOUT, "aarch64") == {}      # no OFF_TI_FLAGS given
    assert hooks.compat_defines(LAYOUT, "riscv64") == {}


def test_the_counting_program_is_whole_instructions_ending_in_exit():
    code = syscall_rate.program(map_fd=5, self_tgid=1234)
    assert len(code) % 8 == 0
    assert code[-8] == 0x95                                   # exit
    # every jump lands inside the program
    for i in range(0, len(code), 8):
        op, off = code[i], int.from_bytes(code[i + 2:i + 4], "little", signed=True)
        if op & 0x07 == 0x05 and op not in (0x85, 0x95):      # BPF_JMP, not call/exit
            assert 0 <= i // 8 + 1 + off < len(code) // 8


def test_share_of_the_calls_counted():
    counts = [0] * 10
    counts[3], counts[4], counts[7] = 10, 30, 60
    assert syscall_rate.share(counts, {3, 7}) == (0.7, 100)
    assert syscall_rate.share(counts, None) == (1.0, 100)
    assert syscall_rate.share([0] * 10, {3}) == (0.0, 0)


def test_a_request_that_needs_raw_hooks_gets_them(monkeypatch):
    monkeypatch.delenv(hooks.FORCE_ENV, raising=False)
    got = hooks.choose({62}, [], LAYOUT, Rate(0.0), need_raw="32-bit rules run in eBPF")
    assert (got.kind, got.why) == (hooks.RAW, "32-bit rules run in eBPF")
