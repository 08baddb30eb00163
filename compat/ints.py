"""32-bit values, as the kernel keeps them and the audit tools print them."""

from __future__ import annotations


def s32(value: int) -> int:
    """The low 32 bits of `value` read as a signed int: 0xFFFFFFFF is -1, as audit's `%d`."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
