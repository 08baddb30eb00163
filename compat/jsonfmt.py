"""One JSON object per event, shaped like laurel's output.

``{"ID": "SEC.MMM:SERIAL", "NODE": .., "SYSCALL": {..}, "OBJ_PID": [{..}, {..}],
"PROCTITLE": {"ARGV": [..]}, "SOURCE": "ebpf"}``

* A record type seen once maps to an object, seen several times to a list; the EXECVE
  records of one long argv are merged into one object.
* Decimal values are JSON numbers; a0..a3, arch and capability bitmaps are
  ``"0x.."`` strings, modes ``"0o.."``; ``(null)`` is ``null``.
* Untrusted strings (quoted or hex) are decoded. Bytes that are not valid UTF-8,
  control characters and ``%`` are percent-encoded (``%0A``), as laurel does.
* ``key`` is a string, or a list when several keys were joined with 0x01.
* ``saddr`` becomes an object (``{"family": "inet", "addr": .., "port": ..}``).
* A user message's ``msg='a=1 b=2'`` becomes a nested object.
* The interpreted names of auditd's ENRICHED format are added in capitals
  (``"UID": "root"``, ``"SYSCALL": "kill"``, ``"SADDR": "{ saddr_fam=inet ... }"``).
"""

from __future__ import annotations

import re
import socket
import struct
from typing import Any

import orjson

from . import interpret
from .record import Event, Record, SyscallRecord, record_type_number, split_fields, stamp

_SINGLE = {"SYSCALL", "EXECVE", "CWD", "PROCTITLE"}
_T_SYSCALL = 1300
_U64 = (1 << 64) - 1
_DECIMAL = re.compile(r"-?\d+")
_HEX_KINDS = {"a0", "a1", "a2", "a3", "arch", "cap_bitmap"}
_STRING_KINDS = {"escaped", "key", "proctitle"}


def _text(b: bytes) -> str:
    """UTF-8 text with control characters, '%' and invalid bytes percent-encoded."""
    out = []
    s = b.decode("utf-8", "surrogateescape")
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte
            out.append(f"%{o - 0xDC00:02X}")
        elif o < 0x20 or o == 0x7F or ch == "%":
            out.append(f"%{o:02X}")
        else:
            out.append(ch)
    return "".join(out)


def _decode_string(value: str) -> bytes | None:
    if value.startswith('"'):
        return value[1:-1].encode("utf-8", "surrogateescape") if value.endswith('"') else None
    if value == "(null)":
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return value.encode("utf-8", "surrogateescape")


def _sockaddr(value: str) -> dict[str, Any]:
    try:
        data = bytes.fromhex(value)
    except ValueError:
        return {"raw": value}
    if len(data) < 2:
        return {"raw": value}
    fam = struct.unpack_from("=H", data)[0]
    out: dict[str, Any] = {"family": interpret._FAMILIES.get(fam, fam)}
    if fam == 2 and len(data) >= 8:
        out["addr"] = socket.inet_ntoa(data[4:8])
        out["port"] = struct.unpack_from("!H", data, 2)[0]
    elif fam == 10 and len(data) >= 24:
        out["addr"] = socket.inet_ntop(socket.AF_INET6, data[8:24])
        out["port"] = struct.unpack_from("!H", data, 2)[0]
    elif fam == 1:
        path = data[2:]
        if path[:1] == b"\0":
            out["abstract"] = _text(path[1:])
        else:
            out["path"] = _text(path.split(b"\0", 1)[0])
    elif fam == 16 and len(data) >= 8:
        out["pid"] = struct.unpack_from("=I", data, 4)[0]
    else:
        out["raw"] = value
    return out


_VALUES: dict[tuple[int, str, str], Any] = {}


def _value(rtype: int, name: str, value: str) -> Any:
    """The JSON value of a field's text, worked out once per (type, name, text): the same
    uids, names and syscalls come back event after event."""
    key = (rtype, name, value)
    out = _VALUES.get(key, _VALUES)
    if out is _VALUES:
        if len(_VALUES) > 65536:
            _VALUES.clear()
        out = _VALUES[key] = _value_of(rtype, name, value)
    return out


def _value_of(rtype: int, name: str, value: str) -> Any:
    kind = interpret.field_type(rtype, name, value)
    if kind in _HEX_KINDS:
        return "0x" + value
    if kind == "sockaddr":
        return _sockaddr(value)
    if kind in _STRING_KINDS:
        raw = _decode_string(value)
        if raw is None:
            return None
        if kind == "key":
            keys = [_text(k) for k in raw.split(b"\x01")]
            return keys[0] if len(keys) == 1 else keys
        return _text(raw)
    if kind in ("mode", "mode_short") and value.isdigit():
        return "0o" + (value.lstrip("0") or "0")
    if value.startswith(('"', "'")) and len(value) >= 2 and value[-1] == value[0]:
        return _text(value[1:-1].encode("utf-8", "surrogateescape"))
    if value == "(null)":
        return None
    if _DECIMAL.fullmatch(value):
        return int(value)
    return value


def _fields(rtype: int, items: list[tuple[str, str]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in items:
        if name == "src" or name in obj:
            continue
        if name == "msg" and value.startswith("'"):
            obj[name] = _fields(rtype, split_fields(value.strip("'")))
        else:
            obj[name] = _value(rtype, name, value)
    return obj


def _proctitle(rec: Record) -> dict[str, Any]:
    raw = _decode_string(rec.get("proctitle") or '""') or b""
    argv = raw.split(b"\0")
    if argv and argv[-1] == b"" and len(argv) > 1:
        argv.pop()
    return {"ARGV": [_text(a) for a in argv]}


def _parsed(rec: Record, ctx: dict) -> dict[str, Any]:
    if rec.type == "PROCTITLE":
        return _proctitle(rec)
    try:
        rtype = record_type_number(rec.type)
    except ValueError:
        rtype = -1
    obj = _fields(rtype, rec.field_items())
    for name, text in interpret.enrichment(rec, ctx, encode=False):
        obj.setdefault(name, text)
    return obj


_KEYS: dict[str, Any] = {}


def _syscall(rec: SyscallRecord) -> dict[str, Any]:
    """An eBPF SYSCALL from its values: the head as the generic path would read its text,
    the identity's members made once per identity (they name nobody: no names involved)."""
    a0, a1, a2, a3 = rec.args
    obj: dict[str, Any] = {"arch": f"0x{rec.arch & _U64:x}", "syscall": rec.nr}
    if rec.success is not None:
        obj["success"] = rec.success
        obj["exit"] = rec.exit
    obj["a0"], obj["a1"] = f"0x{a0 & _U64:x}", f"0x{a1 & _U64:x}"
    obj["a2"], obj["a3"] = f"0x{a2 & _U64:x}", f"0x{a3 & _U64:x}"
    obj["items"] = rec.items
    run = rec.ident
    members = run.memo.get("json")
    if members is None:
        members = run.memo["json"] = _fields(_T_SYSCALL, list(run.items))
    obj.update(members)
    key = _KEYS.get(rec.key)
    if key is None:
        key = _KEYS[rec.key] = _value(_T_SYSCALL, "key", rec.key)
    obj.setdefault("key", key)
    for name, value in rec.after:
        obj.setdefault(name, _value(_T_SYSCALL, name, value))
    for name, text in interpret.record_enrichment(rec, encode=False):
        obj.setdefault(name, text)
    return obj


def _record(rec: Record, ctx: dict) -> dict[str, Any]:
    if type(rec) is SyscallRecord and rec.ident is not None:
        return _syscall(rec)
    if rec.memo is None:
        return _parsed(rec, ctx)
    # a record written many times: parsed once (again when user or group names change)
    return interpret._memo(rec.memo, "json", lambda: _parsed(rec, ctx))


def event_object(ev: Event, ctx: dict | None = None) -> dict[str, Any]:
    """The JSON object of ``ev`` as a dict."""
    ctx = {} if ctx is None else ctx
    obj: dict[str, Any] = {"ID": stamp(ev)}
    if ev.node:
        obj["NODE"] = ev.node
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in ev.records:
        groups.setdefault(rec.type, []).append(_record(rec, ctx))
    for rtype, objs in groups.items():
        if rtype == "EXECVE" and len(objs) > 1:
            obj[rtype] = _merged(objs)
        else:
            obj[rtype] = objs[0] if len(objs) == 1 or rtype in _SINGLE else objs
    obj["SOURCE"] = ev.source
    return obj


def _merged(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """EXECVE records of one event are one argv cut where a record filled up: one object."""
    out: dict[str, Any] = {}
    for o in objs:
        for name, value in o.items():
            out.setdefault(name, value)
    return out


def _inner(pairs) -> bytes:
    """The members of a JSON object made of `pairs` (first of a name wins), no braces."""
    obj: dict[str, Any] = {}
    for name, value in pairs:
        obj.setdefault(name, value)
    return orjson.dumps(obj)[1:-1]


_HEAD_ENRICH: dict[tuple, bytes] = {}


def _syscall_bytes(rec: SyscallRecord) -> bytes:
    """`orjson.dumps(_syscall(rec))`, from pieces made once: the identity's members and its
    names (again when the names change), the key, ARCH/SYSCALL per (arch, syscall)."""
    a0, a1, a2, a3 = rec.args
    head = f'{{"arch":"0x{rec.arch & _U64:x}","syscall":{rec.nr}'
    if rec.success is not None:
        head += f',"success":"{rec.success}","exit":{rec.exit}'
    head += (f',"a0":"0x{a0 & _U64:x}","a1":"0x{a1 & _U64:x}","a2":"0x{a2 & _U64:x}"'
             f',"a3":"0x{a3 & _U64:x}","items":{rec.items}')
    run = rec.ident
    members = run.memo.get("json_bytes")
    if members is None:
        members = run.memo["json_bytes"] = orjson.dumps(_fields(_T_SYSCALL, list(run.items)))[1:-1]
    key = _KEYS.get(rec.key)
    if key is None:
        key = _KEYS[rec.key] = _value(_T_SYSCALL, "key", rec.key)
    hkey = (rec.arch, rec.nr, rec.args[0])
    names = _HEAD_ENRICH.get(hkey)
    if names is None:
        if len(_HEAD_ENRICH) > 4096:
            _HEAD_ENRICH.clear()
        names = _HEAD_ENRICH[hkey] = _inner(interpret._head_enrichment(rec))
    who = interpret._memo(run.memo, "json_names", lambda: _inner(interpret._memo(
        run.memo, ("enrich", False),
        lambda: interpret.enrichment(Record("SYSCALL", list(run.items)), encode=False))))
    parts = [head.encode(), members, b'"key":' + orjson.dumps(key), names, who]
    return b"".join((parts[0], b",", b",".join(p for p in parts[1:] if p), b"}"))


def _record_bytes(rec: Record, ctx: dict) -> bytes:
    if type(rec) is SyscallRecord and rec.ident is not None and not rec.after:
        return _syscall_bytes(rec)
    if rec.memo is not None:
        return interpret._memo(rec.memo, "json_bytes", lambda: orjson.dumps(_record(rec, ctx)))
    return orjson.dumps(_record(rec, ctx))


def format_json(ev: Event, ctx: dict | None = None) -> bytes:
    """One line of JSON (no newline) for ``ev``: `orjson.dumps(event_object(ev))`, put
    together from each record's JSON (kept with records written many times)."""
    ctx = {} if ctx is None else ctx
    groups: dict[str, list[bytes]] = {}
    for rec in ev.records:
        if rec.type == "EXECVE":
            groups.setdefault(rec.type, []).append(_record(rec, ctx))   # merged below
        else:
            groups.setdefault(rec.type, []).append(_record_bytes(rec, ctx))
    out = [f'{{"ID":"{stamp(ev)}"'.encode()]
    if ev.node:
        out.append(b',"NODE":' + orjson.dumps(ev.node))
    for rtype, objs in groups.items():
        out.append(b"," + orjson.dumps(rtype) + b":")
        if rtype == "EXECVE":
            out.append(orjson.dumps(_merged(objs)))
        else:
            out.append(objs[0] if len(objs) == 1 or rtype in _SINGLE
                       else b"[" + b",".join(objs) + b"]")
    out.append(b',"SOURCE":' + orjson.dumps(ev.source) + b"}")
    return b"".join(out)
