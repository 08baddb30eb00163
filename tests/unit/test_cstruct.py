"""Our BPF structs and constants as user space reads them from the C source."""

from __future__ import annotations

import pytest
from audtrace.tracer.ebpf import wire
from audtrace.tracer.ebpf.cstruct import CStructError, Source

SNIPPET = """
#define N 3
#define TWICE (N * 2)     /* an expression of another constant */
#define MASK 0x1fULL
struct inner { u8 a; u32 b; };
struct outer {
	u16 x;            // padded to 8 before y
	u64 y;
	struct inner in[N];
	char name[TWICE];
	u8 raw[2], more[1];
};
"""


def test_natural_alignment_and_padding():
    src = Source(SNIPPET)
    inner = src.struct("inner")
    assert (inner.size, inner.align, inner.offset("b")) == (8, 4, 4)
    outer = src.struct("outer")
    assert [(m.name, m.offset) for m in outer.members] == [
        ("x", 0), ("y", 8), ("in", 16), ("name", 40), ("raw", 46), ("more", 48)]
    assert outer.size == 56 and outer.offset("in.b") == 20


def test_a_default_under_ifndef_yields_to_the_first_definition():
    src = Source("#define SPAN 64\n#ifndef SPAN\n#define SPAN 8\n#endif\n")
    assert src.const("SPAN") == 64


def test_constants_are_evaluated_with_their_suffixes():
    src = Source(SNIPPET)
    assert (src.const("N"), src.const("TWICE"), src.const("MASK")) == (3, 6, 31)
    with pytest.raises(CStructError, match="no integer #define NOPE"):
        src.const("NOPE")


def test_codec_flattens_nested_arrays_and_packs_back():
    c = Source(SNIPPET).codec("outer")
    data = c.pack(x=7, y=2**40, in_1_b=9, name=b"abc", raw=b"\1\2")
    v = c.unpack_from(data)
    assert (v.x, v.y, v.in_1_b, v.name, v.raw) == (7, 2**40, 9, b"abc\0\0\0", b"\1\2")
    assert len(data) == 56
    with pytest.raises(CStructError, match="no member zz"):
        c.pack(zz=1)


def test_a_run_of_members():
    c = Source(SNIPPET).codec("outer", start="y", end="name")
    assert c.offset == 8 and c.size == 32 and c.names[0] == "y"


def test_unknown_types_and_sizes_are_refused():
    with pytest.raises(CStructError, match="unknown type"):
        Source("struct s { float f; };").struct("s")
    with pytest.raises(CStructError, match="not a constant"):
        Source("struct s { u8 a[WHAT]; };").struct("s")


@pytest.mark.parametrize("family", ["signal.c", "bind.c", "net.c", "exec.c", "exit.c",
                                    "ioctl.c", "clock.c", "rules.c", "latency.c"])
def test_every_family_reads(family):
    """Each program's event and extra parse; what the wire head says fits what it sends."""
    src = wire.family_source(family)
    ev = src.struct("syscall_event")
    assert ev.offset("title") > ev.offset("id") > ev.offset("ret")
    sent = "exec_extra" if src.has_struct("exec_extra") else "family_extra"
    assert src.struct(sent).size <= src.const("EXTRA_MAX")
    assert src.const("EXE_DEPTH") * src.const("EXE_PART") == src.const("PATH_SPAN")
