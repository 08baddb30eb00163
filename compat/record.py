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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_I386 = 0x40000003

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


@dataclass(slots=True)
class Record:
    """One audit record: its type name and its fields as written."""

    type: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    # Relayed kernel records keep the exact text after "): "; fields are parsed from it.
    body: str | None = None

    def field_items(self) -> list[tuple[str, str]]:
        if not self.fields and self.body:
            self.fields = split_fields(self.body)
        return self.fields

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
        return " ".join(f"{k}={v}" for k, v in self.fields)


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
    from .tables import msg_types

    return msg_types().get(num) or f"UNKNOWN[{num}]"


@functools.cache
def _type_numbers() -> dict[str, int]:
    """Name -> number; a name listed twice keeps its first number, as a search in order would."""
    from .tables import msg_types

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
    text = rec.text()
    if ev.source == "ebpf":
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
    return "\n".join(record_line(ev, rec) for rec in ev.records)


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
