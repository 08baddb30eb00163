"""NETLINK_AUDIT: the kernel audit control messages and the multicast record reader.

The two fixed structs of the protocol (struct audit_status, struct audit_rule_data from
include/uapi/linux/audit.h) are declared as data, as pyroute2 nlmsg classes. The sockets are
plain `socket.socket` objects, not pyroute2's NetlinkSocket: in pyroute2 0.9 that socket runs
an asyncio loop per call (run_until_complete), so it cannot be used from a signal handler that
interrupted another call on it (the rule cleanup must run there), and its datagram protocol
turns one ENOBUFS into a sticky error (measured: every later get() raises ENOBUFS again),
while the multicast reader must survive a receive-buffer overflow and count it.

Quirks of the kernel side that shape the code:
- replies to AUDIT_GET and AUDIT_LIST_RULES are sent by a kernel thread, so the ACK of a
  request arrives *before* its reply; requests that return data are sent without NLM_F_ACK
  and read until their reply (errors still come back as NLMSG_ERROR).
- multicast records carry the text without a trailing NUL; nlmsg_len is the full length.
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from audtrace.compat import rules, tables
from pyroute2.netlink import NETLINK_AUDIT, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsg

# --- message types (uapi linux/audit.h) ---------------------------------------------------
AUDIT_GET = 1000
AUDIT_SET = 1001
AUDIT_ADD_RULE = 1011
AUDIT_DEL_RULE = 1012
AUDIT_LIST_RULES = 1013
AUDIT_EOE = 1320

AUDIT_NLGRP_READLOG = 1  # enum audit_nlgrps: the multicast group of every record

AUDIT_STATUS_ENABLED = 0x0001

AUDIT_BITMASK_SIZE = 64
AUDIT_MAX_FIELDS = 64
AUDIT_MAX_KEY_LEN = 256
AUDIT_KEY_SEPARATOR = "\x01"  # several keys of one rule share one key field

# filter lists, actions, operators and fields: the names auditctl gives the kernel's numbers
# (compat/rules.py holds them, with the rule language)
FILTERS = rules.LISTS
_FILTER_NAMES = {v: k for k, v in FILTERS.items()}
AUDIT_FILTER_MASK = 0x07  # libaudit: the list number inside rule flags
ACTIONS = rules.ACTIONS
_ACTION_NAMES = {v: k for k, v in ACTIONS.items()}

# operators (fieldflags)
AUDIT_OPERATORS = 0x78000000
OPERATORS = rules.OPERATORS
_OPERATOR_SYMBOLS = {v: k for k, v in OPERATORS.items()}

FIELDS = rules.FIELDS
_FIELD_ALIASES = rules.ALIASES
_FIELD_NAMES = {v: k for k, v in FIELDS.items()}
# fields whose value is a string in the rule's buf (the kernel's audit_data_to_entry)
STRING_FIELDS = frozenset(FIELDS[name] for name in rules.STRING_FIELDS)
_UNSET_FIELDS = frozenset(["uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid",
                           "auid", "sessionid", "obj_uid", "obj_gid"])
_PERM_BITS = rules.PERM_BITS

AUDIT_ARCH_ARM = rules.AUDIT_ARCH_ARM
# what "-F arch=b64" / "b32" mean on each machine (libaudit's audit_determine_machine)
_ARCH_BITS = rules.ARCH_PAIRS

class AuditError(OSError):
    """A request the kernel refused: `errno` is the kernel's error, str() one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- the structs, declared as pyroute2 messages --------------------------------------------
class audit_status_msg(nlmsg):
    """struct audit_status (AUDIT_GET reply, AUDIT_SET request)."""

    fields = (
        ("mask", "I"),
        ("enabled", "I"),
        ("failure", "I"),
        ("pid", "I"),
        ("rate_limit", "I"),
        ("backlog_limit", "I"),
        ("lost", "I"),
        ("backlog", "I"),
        ("feature_bitmap", "I"),  # union with the deprecated `version`
        ("backlog_wait_time", "I"),
        ("backlog_wait_time_actual", "I"),
    )


class audit_rule_msg(nlmsg):
    """struct audit_rule_data, followed by `buflen` bytes of string field values."""

    fields = (
        ("flags", "I"),
        ("action", "I"),
        ("field_count", "I"),
        ("mask", f"{AUDIT_BITMASK_SIZE}I"),
        ("fields", f"{AUDIT_MAX_FIELDS}I"),
        ("values", f"{AUDIT_MAX_FIELDS}I"),
        ("fieldflags", f"{AUDIT_MAX_FIELDS}I"),
        ("buflen", "I"),
    )
    defaults = {name: (0,) * AUDIT_MAX_FIELDS
                for name in ("mask", "fields", "values", "fieldflags")}
    FIXED_SIZE = struct.calcsize("".join(fmt for _, fmt in fields))

    # the flexible array `char buf[]` has no struct format: appended / read after the fields
    def ft_encode(self, offset: int) -> tuple[int, int]:
        offset, _ = super().ft_encode(offset)
        buf = bytes(self.get("buf") or b"")
        pad = -len(buf) % 4
        self.data.extend(buf + b"\0" * pad)
        return offset + len(buf) + pad, pad

    def ft_decode(self, offset: int) -> None:
        super().ft_decode(offset)
        start = offset + self.FIXED_SIZE
        self["buf"] = bytes(self.data[start:start + self["buflen"]])


def _encode(msg: nlmsg, msg_type: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(offset, length, type, seq) of each netlink message in one datagram."""
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, seq = struct.unpack_from("IHHI", data, off)
        if length < 16 or off + length > len(data):
            break
        yield off, length, mtype, seq
        off += (length + 3) & ~3


# --- rules ---------------------------------------------------------------------------------
def machine_arches() -> tuple[int, int]:
    """(b64, b32) AUDIT_ARCH constants of the running machine."""
    native = tables.host_arch()
    try:
        return _ARCH_BITS[native]
    except KeyError:
        raise ValueError(f"no 64/32-bit audit arch pair for 0x{native:x}") from None


def rule_syscalls(arch: str, names) -> list[int]:
    """The numbers of syscalls `names` under a rule's `-F arch=b64|b32`, leaving out those
    that arch lacks."""
    b64, b32 = machine_arches()
    const = {"b64": b64, "b32": b32}[arch]
    return [n for n in (tables.syscall_number(const, name) for name in names) if n is not None]


def _arch_value(value: int | str) -> int:
    if isinstance(value, int):
        return value & 0xFFFFFFFF
    b64, b32 = machine_arches()
    named = {"b64": b64, "b32": b32}
    if value.lower() in named:
        return named[value.lower()]
    return int(value, 0)


def _field_number(name: str) -> int:
    name = _FIELD_ALIASES.get(name, name)
    if name in FIELDS:
        return FIELDS[name]
    if re.fullmatch(r"f\d+", name):  # how auditctl lists a field it has no name for
        return int(name[1:])
    raise ValueError(f"unknown audit rule field {name!r}")


def _field_name(number: int) -> str:
    return _FIELD_NAMES.get(number, f"f{number}")


def _normalize(name: str, op: str, value: int | str) -> tuple[str, str, int | str]:
    """One field in the form the kernel gives back, so equal rules compare equal."""
    num = _field_number(name)
    name = _field_name(num)
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r} in field {name}")
    if num in STRING_FIELDS:
        if not isinstance(value, str):
            raise ValueError(f"field {name} takes a string, not {value!r}")
        if num == FIELDS["key"] and len(value.encode()) > AUDIT_MAX_KEY_LEN:
            raise ValueError(f"key longer than {AUDIT_MAX_KEY_LEN} bytes")
        return name, op, value
    if name == "arch":
        return name, op, _arch_value(value)
    if name == "perm" and isinstance(value, str):
        bits = 0
        for ch in value:
            bits |= dict(_PERM_BITS)[ch]
        return name, op, bits
    if isinstance(value, str):
        value = 0xFFFFFFFF if value == "unset" and name in _UNSET_FIELDS else int(value, 0)
    if name == "exit":  # the only field the kernel compares signed against a negative errno
        return name, op, struct.unpack("i", struct.pack("I", value & 0xFFFFFFFF))[0]
    return name, op, value & 0xFFFFFFFF


def _merge_keys(fields: list[tuple[str, str, int | str]]) -> list[tuple[str, str, int | str]]:
    """The kernel takes one key field per rule: several keys share it, joined by \\x01."""
    keys = [str(v) for n, _o, v in fields if n == "key"]
    if len(keys) < 2:
        return fields
    first = next(i for i, f in enumerate(fields) if f[0] == "key")
    rest = [f for f in fields if f[0] != "key"]
    return rest[:first] + [("key", "=", AUDIT_KEY_SEPARATOR.join(keys))] + rest[first:]


@dataclass
class AuditRule:
    """One audit rule as auditctl knows it: `-a ACTION,LIST -S ... -F NAME OP VALUE ...`.

    `syscalls` are numbers for the rule's arch; empty on the exit list means all syscalls.
    `fields` are (name, operator, value) in rule order; values are normalized on creation
    (arch "b64" -> its AUDIT_ARCH number, "unset" -> 4294967295, perm "wa" -> bits) so a
    rule compares equal to the same rule read back from the kernel.
    """

    list: str = "exit"
    action: str = "always"
    syscalls: list[int] = field(default_factory=lambda: [])
    fields: list[tuple[str, str, int | str]] = field(default_factory=lambda: [])

    def __post_init__(self) -> None:
        if self.list not in FILTERS:
            raise ValueError(f"unknown audit filter list {self.list!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit rule action {self.action!r}")
        if len(self.fields) > AUDIT_MAX_FIELDS:
            raise ValueError(f"more than {AUDIT_MAX_FIELDS} fields")
        if any(not 0 <= nr < AUDIT_BITMASK_SIZE * 32 for nr in self.syscalls):
            raise ValueError(f"syscall number out of range in {self.syscalls}")
        self.syscalls = sorted(set(self.syscalls))
        self.fields = _merge_keys([_normalize(*f) for f in self.fields])

    @property
    def arch(self) -> int | None:
        for name, _op, value in self.fields:
            if name == "arch":
                return int(value)
        return None

    def key(self) -> str | None:
        keys = [str(v) for n, _o, v in self.fields if n == "key"]
        return AUDIT_KEY_SEPARATOR.join(keys) if keys else None

    def _takes_syscalls(self) -> bool:
        return self.list in ("exit", "io_uring")

    def to_rule_data(self) -> audit_rule_msg:
        msg = audit_rule_msg()
        mask = [0] * AUDIT_BITMASK_SIZE
        if self._takes_syscalls() and not self.syscalls:
            mask = [0xFFFFFFFF] * AUDIT_BITMASK_SIZE  # what auditctl sends for "-S all"
        for nr in self.syscalls:
            mask[nr // 32] |= 1 << (nr % 32)
        nums, values, flags = [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS
        buf = b""
        for i, (name, op, value) in enumerate(self.fields):
            nums[i] = _field_number(name)
            flags[i] = OPERATORS[op]
            if nums[i] in STRING_FIELDS:
                raw = str(value).encode()
                values[i] = len(raw)  # the value of a string field is its length in buf
                buf += raw
            else:
                values[i] = int(value) & 0xFFFFFFFF
        msg["flags"] = FILTERS[self.list]
        msg["action"] = ACTIONS[self.action]
        msg["field_count"] = len(self.fields)
        msg["mask"], msg["fields"], msg["values"], msg["fieldflags"] = mask, nums, values, flags
        msg["buflen"] = len(buf)
        msg["buf"] = buf
        return msg

    @classmethod
    def from_rule_data(cls, msg: audit_rule_msg) -> AuditRule:
        listnr = msg["flags"] & AUDIT_FILTER_MASK
        if listnr not in _FILTER_NAMES or msg["action"] not in _ACTION_NAMES:
            raise ValueError(f"unsupported rule list {listnr} / action {msg['action']}")
        mask = msg["mask"]
        syscalls: list[int] = []
        if not all(w == 0xFFFFFFFF for w in mask[:AUDIT_BITMASK_SIZE - 1]):
            syscalls = [nr for nr in range(AUDIT_BITMASK_SIZE * 32)
                        if mask[nr // 32] & (1 << (nr % 32))]
        fields: list[tuple[str, str, int | str]] = []
        buf, boff = msg["buf"], 0
        for i in range(msg["field_count"]):
            num = msg["fields"][i] & ~AUDIT_OPERATORS
            op = _OPERATOR_SYMBOLS.get(msg["fieldflags"][i] & AUDIT_OPERATORS, "=")
            value: int | str = msg["values"][i]
            if num in STRING_FIELDS:
                value = buf[boff:boff + int(value)].decode(errors="surrogateescape")
                boff += msg["values"][i]
            fields.append((_field_name(num), op, value))
        return cls(list=_FILTER_NAMES[listnr], action=_ACTION_NAMES[msg["action"]],
                   syscalls=syscalls, fields=fields)

    def __str__(self) -> str:
        """The rule as `auditctl -l` prints it (audit-userspace src/auditctl-listing.c)."""
        return rules.format_rule(self.list, self.action, self.syscalls, self.fields)

    @classmethod
    def from_rule(cls, rule: rules.Rule) -> AuditRule:
        """The kernel form of a parsed auditctl rule (compat/rules.py)."""
        return cls(list=rule.list, action=rule.action, syscalls=list(rule.syscalls),
                   fields=list(rule.fields))

    def to_rule(self) -> rules.Rule:
        return rules.Rule(self.list, self.action, tuple(self.syscalls), tuple(self.fields))


# --- control socket ------------------------------------------------------------------------
_STATUS_KEYS = tuple(name for name, _fmt in audit_status_msg.fields if name != "mask")
_REPLY_TIMEOUT = 5.0


def _open_audit_socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    except OSError as e:
        raise AuditError(e.errno or errno.EPROTONOSUPPORT,
                         f"cannot open NETLINK_AUDIT socket: {e.strerror} "
                         "(kernel without CONFIG_AUDIT, or not in the initial network and "
                         "user namespace)") from None


class AuditNetlink:
    """Requests to the kernel audit subsystem over one unicast NETLINK_AUDIT socket.

    Needs CAP_AUDIT_CONTROL. Not thread-safe; open one per thread (they are cheap).
    """

    def __init__(self) -> None:
        self._sock = _open_audit_socket()
        self._sock.bind((0, 0))
        self._seq = int(time.monotonic_ns() & 0x7FFFFFFF)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> AuditNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    # ---- requests
    def status(self) -> dict[str, int]:
        """struct audit_status as a dict (enabled, failure, pid, rate_limit, lost, ...)."""
        (data, off), = self._request(AUDIT_GET, audit_status_msg(), "get audit status",
                                     want=AUDIT_GET)
        # zero-padded: older kernels send a shorter struct (no backlog_wait_time_actual)
        msg = audit_status_msg(bytes(data[off:]) + bytes(64))
        msg.decode()
        return {k: msg[k] for k in _STATUS_KEYS}

    def set_enabled(self, enabled: int) -> None:
        msg = audit_status_msg()
        msg["mask"] = AUDIT_STATUS_ENABLED
        msg["enabled"] = enabled
        self._request(AUDIT_SET, msg, f"set audit enabled={enabled}")

    def add_rule(self, rule: AuditRule) -> None:
        self._request(AUDIT_ADD_RULE, rule.to_rule_data(), f"add rule '{rule}'")

    def del_rule(self, rule: AuditRule) -> None:
        self._request(AUDIT_DEL_RULE, rule.to_rule_data(), f"delete rule '{rule}'")

    def list_rules(self) -> list[AuditRule]:
        rules = []
        for data, off in self._request(AUDIT_LIST_RULES, audit_rule_msg(), "list rules",
                                       want=AUDIT_LIST_RULES, until_done=True):
            msg = audit_rule_msg(data, offset=off)
            msg.decode()
            rules.append(AuditRule.from_rule_data(msg))
        return rules

    # ---- transport
    def _request(self, msg_type: int, msg: nlmsg, what: str, want: int | None = None,
                 until_done: bool = False) -> list[tuple[bytes, int]]:
        """Send one request; return (datagram, offset) of each reply message of type `want`.

        Without `want` the request asks for an ACK and returns [] once it arrives.
        """
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        seq = self._seq
        flags = NLM_F_REQUEST | (0 if want is not None else NLM_F_ACK)
        try:
            self._sock.send(_encode(msg, msg_type, flags, seq))
        except OSError as e:
            raise _error(e.errno or errno.EIO, what) from None
        replies: list[tuple[bytes, int]] = []
        deadline = time.monotonic() + _REPLY_TIMEOUT
        while True:
            data = self._recv(deadline, what)
            for off, _length, mtype, mseq in _messages(data):
                if mseq != seq:
                    continue  # a late answer to an earlier request
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("i", data, off + 16)[0]
                    if code:
                        raise _error(code, what)
                    if want is None:
                        return replies
                elif mtype == NLMSG_DONE and until_done:
                    return replies
                elif mtype == want:
                    replies.append((data, off))
                    if not until_done:
                        return replies

    def _recv(self, deadline: float, what: str) -> bytes:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuditError(errno.ETIMEDOUT, f"audit: {what}: no reply from the kernel")
            ready, _, _ = select.select([self._sock], [], [], left)
            if not ready:
                continue
            try:
                return self._sock.recv(1 << 16)
            except InterruptedError:
                continue
            except OSError as e:
                raise _error(e.errno or errno.EIO, what) from None


_HINTS = {
    errno.EPERM: "audit is locked (enabled=2) or CAP_AUDIT_CONTROL is missing",
    errno.EEXIST: "the rule already exists",
    errno.ENOENT: "no such rule",
    errno.EINVAL: "the kernel rejected the request as invalid",
    errno.ECONNREFUSED: "audit is not available in this namespace",
}


def _error(code: int, what: str) -> AuditError:
    name = errno.errorcode.get(code, str(code))
    hint = _HINTS.get(code, os.strerror(code))
    return AuditError(code, f"audit: {what}: {hint} ({name})")


# --- multicast reader ----------------------------------------------------------------------
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class AuditReader:
    """A NETLINK_AUDIT socket joined to AUDIT_NLGRP_READLOG: every audit record, read-only.

    Needs CAP_AUDIT_READ. Reads beside auditd (if any) without displacing it. The socket is
    non-blocking; `recv_records()` drains what is queued. A full receive buffer makes the
    kernel drop records and report ENOBUFS once: `overruns` counts those reports (how many
    records went is unknowable).
    """

    def __init__(self, rcvbuf: int = 32 << 20) -> None:
        self._sock = _open_audit_socket()
        try:  # FORCE ignores net.core.rmem_max (needs CAP_NET_ADMIN), else capped
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            self._sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        except OSError as e:
            self._sock.close()
            raise _error(e.errno or errno.EPERM, "join the audit multicast group "
                         "(needs CAP_AUDIT_READ)") from None
        self._sock.setblocking(False)
        self.overruns = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def recv_records(self) -> Iterator[tuple[int, str]]:
        """(record type, text) of every record queued now; text as the kernel wrote it."""
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            for off, length, mtype, _seq in _messages(data):
                if mtype in (NLMSG_ERROR, NLMSG_DONE):
                    continue
                text = bytes(data[off + 16:off + length]).rstrip(b"\0\n")
                yield mtype, text.decode("utf-8", errors="surrogateescape")
