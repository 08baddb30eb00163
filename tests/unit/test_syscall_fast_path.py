"""An eBPF SYSCALL kept as values renders, in every format, exactly as the same fields
written out as text and read back by the generic formatters."""

from __future__ import annotations

from audtrace.compat import interpret, jsonfmt
from audtrace.compat.record import Event, Record, Run, SyscallRecord, enc_str, format_raw
from hypothesis import given
from hypothesis import strategies as st

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
NAMES = st.binary(max_size=20)


@st.composite
def syscall_records(draw) -> SyscallRecord:
    ident = Run([
        ("ppid", str(draw(U32))), ("pid", str(draw(U32))), ("auid", str(draw(U32))),
        ("uid", str(draw(st.sampled_from([0, 1, 65534, 4242])))),
        ("gid", str(draw(st.sampled_from([0, 1, 65534, 4242])))),
        ("euid", "0"), ("suid", "0"), ("fsuid", "0"), ("egid", "0"), ("sgid", "0"),
        ("fsgid", "0"), ("tty", draw(st.sampled_from(["(none)", "pts0"]))),
        ("ses", str(draw(U32))), ("comm", enc_str(draw(NAMES))),
        ("exe", draw(st.sampled_from(["(null)", enc_str(draw(NAMES))])))])
    ret = draw(st.integers(-(2**63), 2**63 - 1))
    success = draw(st.sampled_from([None, "yes", "no"]))
    after = draw(st.sampled_from([(), (("latency_ns", '"123"'),)]))
    keys = draw(st.sampled_from(["(null)", '"k"', enc_str("a\x01b")]))
    return SyscallRecord(draw(st.sampled_from([0xC000003E, 0x40000003])),
                         draw(st.integers(-1, 460)), success, ret,
                         tuple(draw(U64) for _ in range(4)), draw(st.integers(0, 3)), ident,
                         keys, after)


@given(syscall_records())
def test_every_format_as_the_generic_path(rec):
    fast = Event(1_795_000_000, 7, 2**31 + 1, [rec], "ebpf")
    plain = Event(1_795_000_000, 7, 2**31 + 1, [Record("SYSCALL", list(rec.field_items()))],
                  "ebpf")
    assert rec.text() == plain.records[0].text()
    assert format_raw(fast) == format_raw(plain)
    assert interpret.format_enriched(fast) == interpret.format_enriched(plain)
    assert interpret.format_interpreted(fast) == interpret.format_interpreted(plain)
    assert jsonfmt.format_json(fast) == jsonfmt.format_json(plain)
    # and again, with everything kept from the first time
    assert jsonfmt.format_json(fast) == jsonfmt.format_json(plain)
    assert interpret.format_enriched(fast) == interpret.format_enriched(plain)
