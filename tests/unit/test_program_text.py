"""The C text BCC compiles (tracer/ebpf/probes.py program_text): generated code goes where
the source says, and a source without the place for it is refused, not compiled without."""

from __future__ import annotations

from pathlib import Path

import pytest
from audtrace.tracer.ebpf.layout import Layout
from audtrace.tracer.ebpf.probes import ProbeError, ProgramSpec, program_text

LAYOUT = Layout("btf", {"OFF_TASK_TGID": 0})
NO_TRACEFS = Path("/nonexistent")       # no syscalls are named: no format is read


def test_generated_code_takes_the_place_of_its_line():
    generated = "static __always_inline int rules_enter(s32 nr, const u64 *a) { return 7; }\n"
    spec = ProgramSpec("rules.c", (), {"FILTER_PID": 0}, generated=generated)
    text = program_text(spec, LAYOUT, NO_TRACEFS, 4096, [])
    assert generated in text
    assert "@GENERATED@" not in text
    # in place: after what rules.c defines before the line, before what it defines after
    assert text.index("in_groups(u32 gid)") < text.index(generated) < text.index("audit_return(")


def test_a_source_without_the_line_is_refused():
    spec = ProgramSpec("clock.c", (), generated="int nothing;\n")
    with pytest.raises(ProbeError, match="clock.c has no @GENERATED@ line"):
        program_text(spec, LAYOUT, NO_TRACEFS, 4096, [])
