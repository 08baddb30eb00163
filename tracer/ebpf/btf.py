"""A minimal BTF reader: byte offsets of kernel struct members.

The BPF programs read kernel structs at offsets taken from the running kernel's BTF
(/sys/kernel/btf/vmlinux), never from whatever header tree BCC compiles against: the two
can differ (6.1 headers on a 6.18 kernel). Only what offset lookup needs is decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
# kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

# bytes that follow struct btf_type, per kind: fixed part and per-vlen part
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
          FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class BTFError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


class BTF:
    """Types of one BTF blob, indexed lazily: struct/union members are decoded on demand."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BTFError(f"bad BTF magic {magic:#x}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._strs = hdr_len + str_off
        self._str_end = self._strs + str_len
        # type id -> position of its struct btf_type; id 0 is void
        self._pos: list[int] = [0]
        self._by_name: dict[str, list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.unpack_from
        while pos < end:
            name_off, info = unpack("<II", data, pos)
            kind = (info >> 24) & 0x1F
            self._pos.append(pos)
            if kind in (STRUCT, UNION, TYPEDEF, FUNC) and name_off:
                self._by_name.setdefault(self._str(name_off), []).append(len(self._pos) - 1)
            fixed, per = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * (info & 0xFFFF)

    @classmethod
    def load(cls, path: Path = VMLINUX) -> BTF:
        return cls(path.read_bytes())

    def _str(self, off: int) -> str:
        start = self._strs + off
        end = self._data.index(b"\0", start, self._str_end)
        return self._data[start:end].decode()

    def _type(self, tid: int) -> tuple[int, int, int, int]:
        """(kind, vlen, kflag, size_or_type) of a type id."""
        _name, info, size_type = struct.unpack_from("<III", self._data, self._pos[tid])
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_type

    def resolve(self, tid: int) -> int:
        """Follow typedefs and qualifiers to the underlying type."""
        while True:
            kind, _vlen, _kflag, ref = self._type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref

    def struct_id(self, name: str) -> int:
        for tid in self._by_name.get(name, []):
            kind = self._type(tid)[0]
            if kind in (STRUCT, UNION):
                return tid
            if kind == TYPEDEF:
                target = self.resolve(tid)
                if self._type(target)[0] in (STRUCT, UNION):
                    return target
        raise BTFError(f"no struct {name} in BTF")

    def typedef_id(self, name: str) -> int:
        """The type id of a typedef (`btf_trace_sys_enter`: what a tp_btf program attaches
        to)."""
        for tid in self._by_name.get(name, []):
            if self._type(tid)[0] == TYPEDEF:
                return tid
        raise BTFError(f"no typedef {name} in BTF")

    def members(self, tid: int) -> list[Member]:
        kind, vlen, kflag, _size = self._type(tid)
        if kind not in (STRUCT, UNION):
            raise BTFError(f"type {tid} is not a struct or union")
        out = []
        base = self._pos[tid] + 12
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._data, base + 12 * i)
            if kflag:
                out.append(Member(self._str(name_off), mtype, off & 0xFFFFFF, off >> 24))
            else:
                out.append(Member(self._str(name_off), mtype, off, 0))
        return out

    def size(self, tid: int) -> int:
        tid = self.resolve(tid)
        kind, _vlen, _kflag, size = self._type(tid)
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, self._pos[tid] + 12)
            return self.size(elem) * nelems
        return size

    def _find(self, tid: int, name: str) -> tuple[int, Member] | None:
        """Bit offset and member `name` in struct tid, looking through anonymous members."""
        for m in self.members(tid):
            if m.name == name:
                return m.bit_offset, m
            if not m.name:
                inner = self.resolve(m.type_id)
                if self._type(inner)[0] in (STRUCT, UNION):
                    found = self._find(inner, name)
                    if found:
                        return m.bit_offset + found[0], found[1]
        return None

    def offset(self, path: str) -> int:
        """Byte offset of a dotted member path: "task_struct.signal", "dentry.d_name.name"."""
        struct_name, *names = path.split(".")
        if not names:
            raise BTFError(f"{path}: no member named")
        tid, bits = self.struct_id(struct_name), 0
        for i, name in enumerate(names):
            found = self._find(tid, name)
            if found is None:
                raise BTFError(f"{path}: no member {name}")
            bits += found[0]
            if found[1].bitfield_size or found[0] % 8:
                raise BTFError(f"{path}: {name} is a bitfield")
            if i < len(names) - 1:
                tid = self.resolve(found[1].type_id)
        return bits // 8

    def sizeof(self, path: str) -> int:
        """Bytes of a struct ("upid") or of a member path ("xa_node.slots")."""
        struct_name, *names = path.split(".")
        tid = self.struct_id(struct_name)
        for name in names:
            found = self._find(tid, name)
            if found is None:
                raise BTFError(f"{path}: no member {name}")
            tid = found[1].type_id
        return self.size(tid)

    def member_bits(self, path: str) -> tuple[int, int]:
        """(bit offset, bit size) of a member path; bitfields included (size 0: not one)."""
        struct_name, *names = path.split(".")
        tid, bits, found = self.struct_id(struct_name), 0, None
        for name in names:
            found = self._find(tid, name)
            if found is None:
                raise BTFError(f"{path}: no member {name}")
            bits += found[0]
            tid = self.resolve(found[1].type_id)
        if found is None:
            raise BTFError(f"{path}: no member named")
        return bits, found[1].bitfield_size

    def func_params(self, name: str) -> list[str]:
        """Parameter names of kernel function `name`, in order (BTF FUNC -> FUNC_PROTO)."""
        for tid in self._by_name.get(name, []):
            kind, _vlen, _kflag, proto = self._type(tid)
            if kind != FUNC:
                continue
            _k, vlen, _f, _ret = self._type(proto)
            base = self._pos[proto] + 12
            return [self._str(struct.unpack_from("<I", self._data, base + 8 * i)[0])
                    for i in range(vlen)]
        raise BTFError(f"no function {name} in BTF")

    def has_function(self, name: str) -> bool:
        return any(self._type(tid)[0] == FUNC for tid in self._by_name.get(name, []))

    def has_member(self, path: str) -> bool:
        try:
            self.offset(path)
        except BTFError:
            return False
        return True
