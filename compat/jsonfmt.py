"""One JSON object per event, shaped like laurel's output.

``{"ID": "SEC.MMM:SERIAL", "NODE": .., "SYSCALL": {..}, "OBJ_PID": [{..}, {..}],
"PROCTITLE": {"ARGV": [..]}, "SOURCE": "ebpf"}``

* A record type seen once maps to an object, seen several times to a list.
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
from .record import Event, Record, record_type_number, split_fields, stamp

_SINGLE = {"SYSCALL", "EXECVE", "CWD", "PROCTITLE"}
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


def _value(rtype: int, name: str, value: str) -> Any:
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


def _record(rec: Record, ctx: dict) -> dict[str, Any]:
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
        obj[rtype] = objs[0] if len(objs) == 1 or rtype in _SINGLE else objs
    obj["SOURCE"] = ev.source
    return obj


def format_json(ev: Event, ctx: dict | None = None) -> bytes:
    """One line of JSON (no newline) for ``ev``."""
    return orjson.dumps(event_object(ev, ctx))
