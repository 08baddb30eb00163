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
import select
import socket
import struct
import time
from collections.abc import Iterator

from audtrace.compat import rules
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
AUDIT_MAX_FIELDS = rules.MAX_FIELDS
AUDIT_FILTER_MASK = 0x07  # libaudit: the list number inside rule flags
AUDIT_OPERATORS = 0x78000000  # the operator bits of fieldflags

# the kernel's numbers of the rule model's names (compat/rules.py), both ways
_LIST_NAMES = {v: k for k, v in rules.LISTS.items()}
_ACTION_NAMES = {v: k for k, v in rules.ACTIONS.items()}
_OPERATOR_SYMBOLS = {v: k for k, v in rules.OPERATORS.items()}
# fields whose value is a string in the rule's buf (the kernel's audit_data_to_entry)
_STRING_FIELDS = frozenset(rules.FIELDS[name] for name in rules.STRING_FIELDS)


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
def rule_data(rule: rules.Rule) -> audit_rule_msg:
    """struct audit_rule_data of a rule, as auditctl sends it."""
    msg = audit_rule_msg()
    mask = [0] * AUDIT_BITMASK_SIZE
    if rule.takes_syscalls() and not rule.syscalls:
        mask = [0xFFFFFFFF] * AUDIT_BITMASK_SIZE  # what auditctl sends for "-S all"
    for nr in rule.syscalls:
        mask[nr // 32] |= 1 << (nr % 32)
    nums, values, flags = [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS
    buf = b""
    for i, (name, op, value) in enumerate(rule.fields):
        nums[i] = rules.field_number(name)
        flags[i] = rules.OPERATORS[op]
        if nums[i] in _STRING_FIELDS:
            raw = str(value).encode()
            values[i] = len(raw)  # the value of a string field is its length in buf
            buf += raw
        else:
            values[i] = int(value) & 0xFFFFFFFF
    msg["flags"] = rules.LISTS[rule.list]
    msg["action"] = rules.ACTIONS[rule.action]
    msg["field_count"] = len(rule.fields)
    msg["mask"], msg["fields"], msg["values"], msg["fieldflags"] = mask, nums, values, flags
    msg["buflen"] = len(buf)
    msg["buf"] = buf
    return msg


def rule_of(msg: audit_rule_msg) -> rules.Rule:
    """The rule a struct audit_rule_data (the kernel's AUDIT_LIST_RULES reply) holds."""
    listnr = msg["flags"] & AUDIT_FILTER_MASK
    if listnr not in _LIST_NAMES or msg["action"] not in _ACTION_NAMES:
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
        if num in _STRING_FIELDS:
            value = buf[boff:boff + int(value)].decode(errors="surrogateescape")
            boff += msg["values"][i]
        fields.append((rules.field_name(num), op, value))
    return rules.Rule(list=_LIST_NAMES[listnr], action=_ACTION_NAMES[msg["action"]],
                      syscalls=tuple(syscalls), fields=tuple(fields))


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

    def add_rule(self, rule: rules.Rule) -> None:
        self._request(AUDIT_ADD_RULE, rule_data(rule), f"add rule '{rule}'")

    def del_rule(self, rule: rules.Rule) -> None:
        self._request(AUDIT_DEL_RULE, rule_data(rule), f"delete rule '{rule}'")

    def list_rules(self) -> list[rules.Rule]:
        out = []
        for data, off in self._request(AUDIT_LIST_RULES, audit_rule_msg(), "list rules",
                                       want=AUDIT_LIST_RULES, until_done=True):
            msg = audit_rule_msg(data, offset=off)
            msg.decode()
            out.append(rule_of(msg))
        return out

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
