"""The BPF programs' own structs and constants, read from their C source.

bpf/*.c and bpf/*.h are the one place where an event's layout and the constants it carries
(EV_*, MAX_TARGETS, path sizes) are written; user space reads them from there instead of
retyping them. Only what our headers use is understood: `#define NAME <integer expression>`
and `struct NAME { TYPE a, b; TYPE c[N]; struct OTHER d; };` with the fixed-width types, laid
out with the natural alignment the BPF target (and x86_64, aarch64) gives them.
"""

from __future__ import annotations

import re
import struct
from collections import namedtuple
from dataclasses import dataclass

# type -> (struct format char, size); char arrays become bytes
SCALARS: dict[str, tuple[str, int]] = {
    "u8": ("B", 1), "s8": ("b", 1), "char": ("b", 1),
    "u16": ("H", 2), "s16": ("h", 2),
    "u32": ("I", 4), "s32": ("i", 4), "int": ("i", 4),
    "u64": ("Q", 8), "s64": ("q", 8),
}  # fmt: skip

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE = re.compile(r"^[ \t]*#define[ \t]+([A-Za-z_]\w*)[ \t]+([^\n]+)$", re.MULTILINE)
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*\{([^{}]*)\}\s*;")
_MEMBER = re.compile(r"^(struct\s+\w+|\w+)\s+(.+)$")
_DECL = re.compile(r"^(\w+)\s*(?:\[([^\]]+)\])?$")
_EXPR = re.compile(r"^[\w\s()+\-*/<>|&]+$")


class CStructError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    offset: int
    ctype: str          # a scalar type name, or "struct NAME"
    count: int          # array length; 0 for a plain member
    size: int           # bytes of the whole member
    sub: Struct | None = None   # the struct of a struct member


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    align: int
    members: tuple[Member, ...]

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise CStructError(f"struct {self.name} has no member {name!r}")

    def offset(self, path: str) -> int:
        """Byte offset of a dotted member path (`id.comm`, `extra.targets`)."""
        st: Struct | None = self
        off = 0
        for part in path.split("."):
            if st is None:
                raise CStructError(f"{path!r}: not a struct member")
            m = st.member(part)
            off += m.offset
            st = m.sub
        return off


class Source:
    """Constants and structs of one program's C text (its includes expanded)."""

    def __init__(self, text: str, extra_defines: dict[str, int | str] | None = None) -> None:
        text = _COMMENTS.sub(" ", text)
        # the first definition wins: a later one is a default under #ifndef, which the
        # compiler skips once the name is defined
        raw: dict[str, str] = {}
        for name, value in _DEFINE.findall(text):
            raw.setdefault(name, value.strip())
        for k, v in (extra_defines or {}).items():
            raw[k] = str(v)
        self._raw = raw
        self.constants: dict[str, int] = {}
        for name in raw:
            value = self._eval(name, set())
            if value is not None:
                self.constants[name] = value
        self._bodies = {name: body for name, body in _STRUCT.findall(text)}
        self._structs: dict[str, Struct] = {}

    def _eval(self, name: str, seen: set[str]) -> int | None:
        if name in self.constants:
            return self.constants[name]
        expr = self._raw.get(name)
        if expr is None or name in seen or not _EXPR.match(expr):
            return None
        seen.add(name)
        env: dict[str, int] = {}
        for w in re.findall(r"\b[A-Za-z_]\w*", expr):
            v = self._eval(w, seen)
            if v is None:
                return None
            env[w] = v
        body = re.sub(r"\b(\d+|0x[0-9a-fA-F]+)(?:ULL|UL|U|LL|L)\b", r"\1", expr)
        body = body.replace("/", "//")
        try:
            return int(eval(body, {"__builtins__": {}}, env))  # noqa: S307 - our own headers
        except Exception:
            return None

    def const(self, name: str) -> int:
        try:
            return self.constants[name]
        except KeyError:
            raise CStructError(f"no integer #define {name} in the BPF source") from None

    def has_struct(self, name: str) -> bool:
        return name in self._bodies

    def struct(self, name: str) -> Struct:
        if name in self._structs:
            return self._structs[name]
        body = self._bodies.get(name)
        if body is None:
            raise CStructError(f"no struct {name} in the BPF source")
        members: list[Member] = []
        off, align = 0, 1
        for line in body.split(";"):
            line = " ".join(line.split())
            if not line:
                continue
            m = _MEMBER.match(line)
            if not m:
                raise CStructError(f"struct {name}: cannot read member {line!r}")
            ctype, decls = m.group(1), m.group(2)
            sub = None
            if ctype.startswith("struct "):
                sub = self.struct(ctype.split()[1])
                size, al = sub.size, sub.align
            elif ctype in SCALARS:
                size = al = SCALARS[ctype][1]
            else:
                raise CStructError(f"struct {name}: unknown type {ctype!r}")
            for decl in decls.split(","):
                d = _DECL.match(decl.strip())
                if not d:
                    raise CStructError(f"struct {name}: cannot read {decl.strip()!r}")
                count = 0
                if d.group(2) is not None:
                    count = self._count(d.group(2), name)
                off = -(-off // al) * al
                whole = size * count if count else size
                members.append(Member(d.group(1), off, ctype, count, whole, sub))
                off += whole
                align = max(align, al)
        size = -(-off // align) * align
        st = Struct(name, size, align, tuple(members))
        self._structs[name] = st
        return st

    def _count(self, expr: str, where: str) -> int:
        key = f"__count_{len(self._raw)}"
        self._raw[key] = expr
        v = self._eval(key, set())
        del self._raw[key]
        if v is None:
            raise CStructError(f"struct {where}: array size {expr!r} is not a constant")
        return v

    def codec(self, name: str, start: str | None = None, end: str | None = None) -> Codec:
        """A decoder of `struct name`'s members from `start` up to (not including) `end`."""
        return Codec(self.struct(name), start, end)


class Codec:
    """One struct.Struct over a run of members, flattened: nested structs become
    `outer_inner` fields, char and u8 arrays bytes, scalar arrays one field per element
    (`args_0`...). `unpack_from(buf, at)` gives a namedtuple of them."""

    def __init__(self, st: Struct, start: str | None = None, end: str | None = None) -> None:
        first = st.offset(start) if start else 0
        last = st.offset(end) if end else st.size
        fmt, names = ["<"], []
        pos = first
        for m_off, mname, m in _flat(st, 0, ""):
            if m_off < first or m_off + m.size > last:
                continue
            if m_off > pos:
                fmt.append(f"{m_off - pos}x")
            if m.ctype in ("char", "u8") and m.count:
                fmt.append(f"{m.count}s")
                names.append(mname)
            elif m.count:
                ch = SCALARS[m.ctype][0]
                fmt.append(ch * m.count)
                names += [f"{mname}_{i}" for i in range(m.count)]
            else:
                fmt.append(SCALARS[m.ctype][0])
                names.append(mname)
            pos = m_off + m.size
        if last > pos:
            fmt.append(f"{last - pos}x")
        self.offset = first
        self.struct = struct.Struct("".join(fmt))
        self.size = self.struct.size
        self.names = tuple(names)
        self.tuple = namedtuple(f"{st.name}_fields", names, rename=False)  # type: ignore[misc]
        self._make = self.tuple._make
        self._unpack = self.struct.unpack_from
        self._zeros = self.struct.unpack(bytes(self.size))

    def unpack_from(self, buf, at: int = 0):
        return self._make(self._unpack(buf, at))

    def pack(self, **values) -> bytes:
        """The bytes of these members, the others zero: for tests that build events."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise CStructError(f"no member {', '.join(sorted(unknown))}")
        pairs = zip(self.names, self._zeros, strict=True)
        return self.struct.pack(*(values.get(n, z) for n, z in pairs))


def _flat(st: Struct, base: int, prefix: str):
    for m in st.members:
        name = f"{prefix}{m.name}"
        if m.sub is not None:
            for i in range(max(m.count, 1)):
                sub_prefix = f"{name}_{i}_" if m.count else f"{name}_"
                yield from _flat(m.sub, base + m.offset + i * m.sub.size, sub_prefix)
        else:
            yield base + m.offset, name, m
