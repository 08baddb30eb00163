"""The hot paths of compat/record.py, against their references.

enc_str against the kernel's rule (kernel/audit.c audit_string_contains_control and
audit_log_n_untrustedstring): quoted when every byte is 0x21..0x7e other than '"', else hex.
record_type_number against libaudit's table of record types.
"""

from __future__ import annotations

import pytest
from audtrace.compat.record import enc_str
from hypothesis import given
from hypothesis import strategies as st


def kernel_encoding(raw: bytes) -> str:
    if any(b == 0x22 or b < 0x21 or b > 0x7E for b in raw):
        return raw.hex().upper()
    return '"' + raw.decode("ascii") + '"'


@given(
    st.binary(max_size=40) | st.text(alphabet=st.characters(min_codepoint=0x1F, max_codepoint=0x80))
)
def test_enc_str_matches_the_kernel_rule(value: bytes | str) -> None:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    assert enc_str(value) == kernel_encoding(raw)


def test_enc_str_edges() -> None:
    assert enc_str(b"") == '""'
    assert enc_str(b"!~") == '"!~"'
    assert enc_str(b'a"b') == "612262"
    assert enc_str(b"a b") == "612062"
    assert enc_str(b"\x7f") == "7F"


def test_record_type_number_follows_the_table() -> None:
    """Every name of libaudit's table maps to its first number; the other spellings parse."""
    from audtrace.compat import tables
    from audtrace.compat.record import record_type_number

    first: dict[str, int] = {}
    for num, name in tables.msg_types().items():
        first.setdefault(name, num)
    for name, num in first.items():
        assert record_type_number(name) == num
    assert record_type_number("SYSCALL") == 1300      # linux/audit.h AUDIT_SYSCALL
    assert record_type_number("UNKNOWN[1399]") == 1399
    assert record_type_number("1399") == 1399
    with pytest.raises(ValueError):
        record_type_number("NO_SUCH_TYPE")
