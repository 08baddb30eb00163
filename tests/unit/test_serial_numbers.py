"""eBPF serials: 32 bits, bit 31 set, a slot per run held by an abstract socket, a counter.

Each test takes its slots under a name of its own, so running audtrace beside the tests
never shares slots with them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from audtrace.tracer import serials


@pytest.fixture
def prefix() -> str:
    return f"audtrace-test-{os.getpid()}-{id(object())}/slot/{{}}"


def test_serials_are_32_bit_above_the_kernels_and_rise(prefix):
    s = serials.Serials(prefix)
    got = [next(s) for _ in range(1000)]
    assert all(2**31 <= n < 2**32 for n in got)
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[0] == 2**31 | s.slot << 25 | 1
    s.close()


def test_two_runs_never_share_a_serial(prefix):
    a, b = serials.Serials(prefix), serials.Serials(prefix)
    assert a.slot != b.slot
    sa, sb = {next(a) for _ in range(5000)}, {next(b) for _ in range(5000)}
    assert not sa & sb
    a.close()
    b.close()


def test_the_counter_wraps_within_the_slot(prefix):
    s = serials.Serials(prefix)
    s._n = serials.COUNTER_MASK - 1
    last, wrapped, after = next(s), next(s), next(s)
    assert last == 2**31 | s.slot << 25 | serials.COUNTER_MASK
    assert wrapped == 2**31 | s.slot << 25 and after == wrapped + 1
    s.close()


def test_a_closed_slot_is_free_again(prefix):
    s = serials.Serials(prefix)
    slot = s.slot
    s.close()
    again = serials.Serials(prefix)
    assert again.slot == slot
    again.close()


def test_every_slot_taken_is_one_clear_error(prefix):
    held = [serials.Serials(prefix) for _ in range(serials.SLOTS)]
    assert sorted(h.slot for h in held) == list(range(64))
    with pytest.raises(serials.SlotsExhausted) as e:
        serials.Serials(prefix)
    assert str(e.value).startswith("all 64 serial slots are taken")
    assert "\n" not in str(e.value)
    for h in held:
        h.close()


def test_a_killed_run_frees_its_slot(prefix):
    """The kernel drops an abstract name with its last socket: SIGKILL leaves no stale slot."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from audtrace.tracer import serials; "
         f"s = serials.Serials({prefix!r}); print(s.slot, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        slot = int(holder.stdout.readline())
        mine = serials.Serials(prefix)
        assert mine.slot != slot
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        again = serials.Serials(prefix)
        assert again.slot == slot
        again.close()
        mine.close()
    finally:
        holder.kill()
        holder.wait()
