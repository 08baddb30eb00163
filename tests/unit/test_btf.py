"""BTF offset lookup, on BTF blobs built here by an independent little encoder."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from audtrace.tracer.ebpf.btf import BTF, BTFError
from audtrace.tracer.ebpf.layout import MEMBERS, from_btf

INT, PTR, ARRAY, STRUCT, UNION, TYPEDEF, CONST, FUNC, FUNC_PROTO = 1, 2, 3, 4, 5, 8, 10, 12, 13


class Blob:
    """Builds a BTF blob type by type (ids from 1)."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.next_id = 1

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"",
            kflag: int = 0) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int) -> int:
        return self.add(name, INT, 0, size, struct.pack("<I", size * 8))

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int]],
                kind: int = STRUCT, bitfields: dict[str, int] | None = None) -> int:
        bitfields = bitfields or {}
        extra = b""
        for mname, mtype, bit_off in members:
            off = (bitfields[mname] << 24 | bit_off) if bitfields else bit_off
            extra += struct.pack("<III", self.s(mname), mtype, off)
        return self.add(name, kind, len(members), size, extra, kflag=int(bool(bitfields)))

    def bytes(self) -> bytes:
        hdr_len = 24
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def sample() -> BTF:
    b = Blob()
    u32 = b.int_("unsigned int", 4)
    u64 = b.int_("long long unsigned int", 8)
    char = b.int_("char", 1)
    kuid = b.struct_("", 4, [("val", u32, 0)])
    kuid_t = b.add("kuid_t", TYPEDEF, 0, kuid)
    comm = b.add("", ARRAY, 0, 0, struct.pack("<III", char, u32, 16))
    qstr_inner = b.struct_("", 8, [("hash", u32, 0), ("len", u32, 32)])
    qstr_union = b.struct_("", 8, [("", qstr_inner, 0), ("hash_len", u64, 0)], kind=UNION)
    ptr_char = b.add("", PTR, 0, char)
    qstr = b.struct_("qstr", 16, [("", qstr_union, 0), ("name", ptr_char, 64)])
    const_qstr = b.add("", CONST, 0, qstr)
    b.struct_("dentry", 64, [("d_flags", u32, 0), ("d_name", const_qstr, 256)])
    b.struct_("task_struct", 96, [("state", u32, 0), ("loginuid", kuid_t, 32),
                                  ("comm", comm, 512)])
    b.struct_("flags", 4, [("a", u32, 0), ("b", u32, 3)], bitfields={"a": 3, "b": 5})
    return BTF(b.bytes())


def test_direct_member_offset():
    btf = sample()
    assert btf.offset("task_struct.loginuid") == 4
    assert btf.offset("task_struct.comm") == 64


def test_nested_path_through_const_and_anonymous_union():
    btf = sample()
    assert btf.offset("dentry.d_name") == 32
    assert btf.offset("dentry.d_name.name") == 40
    # a member of an anonymous struct inside an anonymous union
    assert btf.offset("dentry.d_name.len") == 36


def test_typedef_to_anonymous_struct():
    btf = sample()
    assert btf.offset("task_struct.loginuid.val") == 4


def test_errors_name_the_missing_piece():
    btf = sample()
    with pytest.raises(BTFError, match="no member nope"):
        btf.offset("task_struct.nope")
    with pytest.raises(BTFError, match="no struct nosuch"):
        btf.offset("nosuch.x")
    with pytest.raises(BTFError, match="bitfield"):
        btf.offset("flags.b")
    assert not btf.has_member("dentry.d_inode")


def test_functions_are_told_from_types_of_the_same_name():
    b = Blob()
    u32 = b.int_("unsigned int", 4)
    proto = b.add("", FUNC_PROTO, 1, u32, struct.pack("<II", b.s("pid"), u32))
    b.add("do_nanosleep", FUNC, 0, proto)
    b.struct_("getppid_args", 4, [("x", u32, 0)])     # a struct is no function
    btf = BTF(b.bytes())
    assert btf.has_function("do_nanosleep")
    assert btf.func_params("do_nanosleep") == ["pid"]
    assert not btf.has_function("getppid_args")
    assert not btf.has_function("__x64_sys_getppid")


def test_bad_magic_is_refused():
    with pytest.raises(BTFError):
        BTF(b"\0" * 64)


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="no kernel BTF")
def test_running_kernel_layout_has_every_member():
    layout = from_btf(BTF.load())
    assert set(MEMBERS) <= set(layout.defines)
    # members the kernel has kept in place for years, as a sanity anchor
    assert layout.defines["OFF_PATH_MNT"] == 0
    assert layout.defines["OFF_DENTRY_D_NAME_NAME"] > layout.defines["OFF_DENTRY_D_PARENT"]
