"""Audit records and events: the model, the field encodings, the raw text format.

A :class:`Record` holds field values as the exact text audit writes (``comm="kill"``
quoted, ``arch=c000003e`` bare hex, ``pid=62`` decimal); the ``enc_*`` helpers
produce that text. An :class:`Event` is the records sharing one
``(node, sec, msec, serial)`` identity.

Records of ``source == "ebpf"`` events get `` src=ebpf`` appended as their last
field when formatted (:func:`record_text`); builders must not add it themselves
(if a record already ends with a ``src`` field, nothing is appended).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .tables import msg_types

_U64 = (1 << 64) - 1
# the bytes the kernel prints quoted; deleting them leaves nothing for a quotable string
_QUOTABLE = bytes(b for b in range(0x21, 0x7F) if b != 0x22)


def enc_str(value: bytes | str) -> str:
    """Encode an untrusted string the way the kernel does.

    ``"text"`` when every byte is printable ASCII (0x21..0x7e) other than ``"``,
    otherwise uppercase hex of the bytes. The empty string is ``""``.
    """
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    # bytes.translate runs in C: a per-byte Python test cost more than the rest of a record
    if not raw.translate(None, _QUOTABLE):
        return '"' + raw.decode("ascii") + '"'
    return raw.hex().upper()


def dec_str(value: str | None) -> bytes | None:
    """The bytes of a string field as written: "quoted" or hex (enc_str's inverse);
    None for (null), (none) or an absent field."""
    if value is None or value in ("(null)", "(none)"):
        return None
    if value.startswith('"'):
        return value.strip('"').encode()
    try:
        return bytes.fromhex(value)
    except ValueError:
        return value.encode()


def enc_hex(value: int) -> str:
    """Bare lowercase hex as the kernel prints a0..a3 and arch (64-bit two's complement)."""
    return format(value & _U64, "x")


def inet_address(family: int, raw: bytes) -> str | None:
    """The address in an AF_INET or AF_INET6 sockaddr's bytes (a SOCKADDR record's saddr),
    None for another family or too few bytes."""
    if family == socket.AF_INET and len(raw) >= 8:
        return str(ipaddress.IPv4Address(raw[4:8]))
    if family == socket.AF_INET6 and len(raw) >= 24:
        return str(ipaddress.IPv6Address(raw[8:24]))
    return None


def enc_int(value: int) -> str:
    """Decimal."""
    return str(int(value))


def split_fields(body: str) -> list[tuple[str, str]]:
    """Split a record body into ``(name, value text)`` pairs, in order.

    A value runs to the next space unless it starts with ``"`` or ``'`` (then it runs
    to the matching quote, spaces included: user messages carry ``msg='a=1 b=2'``) or
    with ``{`` (then to the next ``}``: ``SADDR={ saddr_fam=inet ... }``). Quotes and
    braces stay part of the value text. Words without ``=`` (as in AVC's
    ``avc:  denied  { read }``) are skipped.
    """
    fields: list[tuple[str, str]] = []
    i, n = 0, len(body)
    while i < n:
        if body[i] == " ":
            i += 1
            continue
        j = i
        while j < n and body[j] not in " =":
            j += 1
        if j >= n or body[j] == " ":  # bare word
            i = j
            continue
        name = body[i:j]
        start = j + 1
        if start < n and body[start] in "\"'{":
            close = "}" if body[start] == "{" else body[start]
            end = body.find(close, start + 1)
            end = n if end < 0 else end + 1
        else:
            end = body.find(" ", start)
            end = n if end < 0 else end
        fields.append((name, body[start:end]))
        i = end
    return fields


class Record:
    """One audit record: its type name and its fields as written.

    ``memo`` is a dict on records that are built once and written many times (one target's
    OBJ_PID, one command line's PROCTITLE): the formats keep what they render there.
    Such a record must not be changed once built.
    """

    __slots__ = ("type", "_items", "body", "memo")

    def __init__(self, type: str, fields: list[tuple[str, str]] | None = None,
                 body: str | None = None, *, shared: bool = False) -> None:
        self.type = type
        self._items = [] if fields is None else fields
        # relayed kernel records keep the exact text after "): "; fields are parsed from it
        self.body = body
        self.memo: dict | None = {} if shared else None

    @property
    def fields(self) -> list[tuple[str, str]]:
        return self._items

    @fields.setter
    def fields(self, value: list[tuple[str, str]]) -> None:
        self._items = value

    def field_items(self) -> list[tuple[str, str]]:
        if not self._items and self.body:
            self._items = split_fields(self.body)
        return self._items

    def get(self, name: str) -> str | None:
        """Raw value text of the first field called ``name``."""
        for key, value in self.field_items():
            if key == name:
                return value
        return None

    def text(self) -> str:
        """The record body as written after ``): ``."""
        if self.body is not None:
            return self.body
        memo = self.memo
        if memo is not None:
            text = memo.get("text")
            if text is None:
                text = memo["text"] = " ".join(f"{k}={v}" for k, v in self._items)
            return text
        return " ".join(f"{k}={v}" for k, v in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.type, self.field_items(), self.body) == (
            other.type, other.field_items(), other.body)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type!r}, {self.field_items()!r}, body={self.body!r})"


class Run:
    """Fields that many records share word for word (one task's identity, in every SYSCALL
    it causes): their text, and what each format makes of them, are worked out once."""

    __slots__ = ("items", "text", "memo")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = tuple(items)
        self.text = " ".join(f"{k}={v}" for k, v in items)
        self.memo: dict = {}


class SyscallRecord(Record):
    """SYSCALL as an eBPF event writes it, kept as values: the per-call head (arch, syscall,
    result, a0..a3, items), the caller's identity as a shared Run, the key, then any extra
    fields and ``src=ebpf``. Its fields are the kernel's, in the kernel's order.
    ``success`` None: a call that never returns (exit), written without success=/exit=."""

    __slots__ = ("arch", "nr", "success", "exit", "args", "items", "ident", "key", "after")

    def __init__(self, arch: int, nr: int, success: str | None, exit: int, args: tuple,
                 items: int, ident: Run, key: str,
                 after: tuple[tuple[str, str], ...] = ()) -> None:
        Record.__init__(self, "SYSCALL", None)
        self._items = None  # type: ignore[assignment]  # made when asked for
        self.arch, self.nr, self.success, self.exit = arch, nr, success, exit
        self.args, self.items, self.ident, self.key, self.after = args, items, ident, key, after

    def head(self) -> str:
        a0, a1, a2, a3 = self.args
        if self.success is None:
            return (f"arch={self.arch & _U64:x} syscall={self.nr} a0={a0 & _U64:x} "
                    f"a1={a1 & _U64:x} a2={a2 & _U64:x} a3={a3 & _U64:x} items={self.items}")
        return (f"arch={self.arch & _U64:x} syscall={self.nr} success={self.success} "
                f"exit={self.exit} a0={a0 & _U64:x} a1={a1 & _U64:x} a2={a2 & _U64:x} "
                f"a3={a3 & _U64:x} items={self.items}")

    def tail(self) -> str:
        """What follows the identity: key, extra fields, src."""
        if not self.after:
            return f" key={self.key} src=ebpf"
        return f" key={self.key} " + " ".join(f"{k}={v}" for k, v in self.after) + " src=ebpf"

    def head_items(self) -> list[tuple[str, str]]:
        a = [format(v & _U64, "x") for v in self.args]
        out = [("arch", format(self.arch & _U64, "x")), ("syscall", str(self.nr))]
        if self.success is not None:
            out += [("success", self.success), ("exit", str(self.exit))]
        return out + [("a0", a[0]), ("a1", a[1]), ("a2", a[2]), ("a3", a[3]),
                      ("items", str(self.items))]

    @property
    def fields(self) -> list[tuple[str, str]]:
        return self.field_items()

    @fields.setter
    def fields(self, value: list[tuple[str, str]]) -> None:
        raise TypeError("a SyscallRecord is built whole: pass its parts to the constructor")

    def field_items(self) -> list[tuple[str, str]]:
        if self._items is None:
            self._items = [*self.head_items(), *self.ident.items, ("key", self.key),
                           *self.after, ("src", "ebpf")]
        return self._items

    def text(self) -> str:
        return f"{self.head()} {self.ident.text}{self.tail()}"


@dataclass(slots=True)
class Event:
    """The records of one audit event, in the order they are written."""

    sec: int
    msec: int
    serial: int
    records: list[Record]
    source: str  # "ebpf" or "audit"
    node: str | None = None

    def ident(self) -> tuple[str | None, int, int, int]:
        """What ausearch groups records by."""
        return (self.node, self.sec, self.msec, self.serial)


def stamp(ev: Event) -> str:
    """``SECONDS.MMM:SERIAL`` as inside ``msg=audit(...)``."""
    return f"{ev.sec}.{ev.msec:03d}:{ev.serial}"


def record_type_name(num: int) -> str:
    """1300 -> 'SYSCALL'; numbers libaudit does not know -> 'UNKNOWN[1399]' as auditd writes."""
    return msg_types().get(num) or f"UNKNOWN[{num}]"


@functools.cache
def _type_numbers() -> dict[str, int]:
    """Name -> number; a name listed twice keeps its first number, as a search in order would."""
    out: dict[str, int] = {}
    for num, known in msg_types().items():
        out.setdefault(known, num)
    return out


def record_type_number(name: str) -> int:
    """'SYSCALL' -> 1300; also accepts 'UNKNOWN[1399]' and '1399'. ValueError otherwise."""
    # a dict, not a search: called for every record the JSON and text formats write
    num = _type_numbers().get(name)
    if num is not None:
        return num
    m = re.fullmatch(r"UNKNOWN\[(\d+)\]|(\d+)", name)
    if m:
        return int(m.group(1) or m.group(2))
    raise ValueError(f"unknown audit record type {name!r}")


def record_text(ev: Event, rec: Record) -> str:
    """Body of ``rec`` as written for ``ev``: eBPF records end with ``src=ebpf``."""
    if type(rec) is SyscallRecord:
        return rec.text()
    memo = rec.memo
    if memo is not None and ev.source == "ebpf":
        text = memo.get("ebpf")
        if text is None:
            text = memo["ebpf"] = _ebpf_text(rec)
        return text
    if ev.source == "ebpf":
        return _ebpf_text(rec)
    return rec.text()


def _ebpf_text(rec: Record) -> str:
    text = rec.text()
    items = rec.field_items()
    if not items or items[-1][0] != "src":
        text = f"{text} src=ebpf" if text else "src=ebpf"
    return text


def record_line(ev: Event, rec: Record) -> str:
    """One raw log line, without newline."""
    prefix = f"node={ev.node} " if ev.node else ""
    text = record_text(ev, rec)
    # auditd trims the trailing space of a record with an empty body.
    sep = " " if text else ""
    return f"{prefix}type={rec.type} msg=audit({stamp(ev)}):{sep}{text}"


def format_raw(ev: Event) -> str:
    """The event as auditd's RAW log format: one line per record, no trailing newline."""
    return "\n".join(raw_lines(ev))


def raw_lines(ev: Event) -> list[str]:
    """The RAW line of each record of the event."""
    pre = f"node={ev.node} type=" if ev.node else "type="
    mid = f" msg=audit({ev.sec}.{ev.msec:03d}:{ev.serial}):"
    lines = []
    for rec in ev.records:
        text = record_text(ev, rec)
        # auditd trims the trailing space of a record with an empty body
        lines.append(pre + rec.type + mid + (" " + text if text else ""))
    return lines


_LINE = re.compile(
    r"(?:node=(?P<node>\S+) )?type=(?P<type>\S+) "
    r"msg=audit\((?P<sec>\d+)\.(?P<msec>\d{3}):(?P<serial>\d+)\):(?: (?P<body>.*))?"
)
_NETLINK = re.compile(r"audit\((\d+)\.(\d{3}):(\d+)\):(?: (.*))?", re.DOTALL)


def parse_line(line: str) -> tuple[str | None, str, int, int, int, str]:
    """Parse one audit log line: ``(node, type name, sec, msec, serial, body)``.

    The type is returned as written (``SYSCALL``, ``UNKNOWN[1399]``). An ENRICHED line's
    interpretations (after 0x1d) are dropped from the body. Raises ValueError when the
    line is not an audit record ausearch would read (e.g. not exactly 3 fraction digits).
    """
    line = line.rstrip("\n").split("\x1d", 1)[0]
    m = _LINE.fullmatch(line)
    if not m:
        raise ValueError(f"malformed audit line: {line[:120]!r}")
    return (
        m["node"],
        m["type"],
        int(m["sec"]),
        int(m["msec"]),
        int(m["serial"]),
        (m["body"] or "").rstrip(" "),
    )


def parse_log(lines: Iterable[str], source: str = "audit") -> list[Event]:
    """Group audit log lines into events by identity, in first-seen order.

    Records keep their body text verbatim. An event whose records all end with
    ``src=ebpf`` gets ``source="ebpf"`` and loses that field (it is re-added on output).
    """
    events: dict[tuple, Event] = {}
    for line in lines:
        if not line.strip():
            continue
        node, rtype, sec, msec, serial, body = parse_line(line)
        key = (node, sec, msec, serial)
        ev = events.get(key)
        if ev is None:
            ev = events[key] = Event(sec, msec, serial, [], source, node)
        ev.records.append(Record(rtype, body=body))
    for ev in events.values():
        if all(r.body == "src=ebpf" or (r.body or "").endswith(" src=ebpf") for r in ev.records):
            ev.source = "ebpf"
            for r in ev.records:
                r.body = (r.body or "")[: -len("src=ebpf")].rstrip(" ")
    return list(events.values())


def parse_netlink(msg_type: int, text: str) -> tuple[int, int, int, str]:
    """Split a kernel NETLINK_AUDIT payload ``audit(S.MMM:N): body`` -> ``(S, MMM, N, body)``.

    Newlines become spaces and trailing blanks/NULs go, as auditd does before writing.
    """
    m = _NETLINK.fullmatch(text.rstrip("\x00\n"))
    if not m:
        raise ValueError(f"malformed audit message of type {msg_type}: {text[:120]!r}")
    body = (m.group(4) or "").replace("\n", " ").rstrip(" ")
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), body
