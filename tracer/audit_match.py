"""Which records on the audit multicast group answer this run's request.

The multicast group carries every record the kernel emits: other rules' events, auditd's,
other tools'. A run relays only the events its own rules match (judged as the kernel judges
them, on arch, syscall and the compared fields), and the CONFIG_CHANGE records of its own
rule changes. The key is not compared: when an earlier rule of the administrator's matches
the same syscall, the kernel writes that rule's key, and the event is still ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from audtrace.compat.record import Event
from audtrace.tracer.audit_netlink import AuditRule

_NUMERIC = {"pid", "ppid", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid",
            "auid", "ses", "exit"}
_HEX = {"a0", "a1", "a2", "a3"}


def _value(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        if name in _HEX or name == "arch":
            return int(text, 16)
        if name == "success":
            return 1 if text == "yes" else 0
        return int(text)
    except ValueError:
        return None


def _compare(have: int, op: str, want: int) -> bool:
    if op == "=":
        return have == want
    if op == "!=":
        return have != want
    if op == "<":
        return have < want
    if op == ">":
        return have > want
    if op == "<=":
        return have <= want
    if op == ">=":
        return have >= want
    if op == "&":
        return bool(have & want)
    if op == "&=":
        return have & want == want
    return True


def rule_matches(rule: AuditRule, fields: dict[str, str]) -> bool:
    """Would the kernel's exit filter match this SYSCALL record with this rule?
    Fields the record cannot answer (exe, path, ...) are taken as matching."""
    nr = _value("syscall", fields.get("syscall"))
    if rule.syscalls and nr not in rule.syscalls:
        return False
    for name, op, want in rule.fields:
        if name == "key" or not isinstance(want, int):
            continue
        if name in _HEX:
            # the kernel compares the register with a 32-bit value
            have = _value(name, fields.get(name))
            if have is None or not _compare(have & 0xFFFFFFFF, op, want & 0xFFFFFFFF):
                return False
        elif name in _NUMERIC or name in ("arch", "success"):
            have = _value(name, fields.get(name))
            if have is not None and not _compare(have, op, want):
                return False
    return True


def relay_filter(rules: list[AuditRule], request: Callable[[Event], bool] | None = None,
                 types: tuple[str, ...] = ()) -> Callable[[Event], bool]:
    """The events of the multicast group this run relays: those its rules match (and that
    pass the subcommand's own filters, e.g. --pid or --target-comm), its rule changes, and
    the kernel's own events of the record types the subcommand names (`exit`: ANOM_ABEND,
    which no rule selects), through the same filters."""
    me = str(os.getpid())

    def want(ev: Event) -> bool:
        first = ev.records[0]
        if first.type == "CONFIG_CHANGE":
            return first.get("pid") == me
        if first.type in types:
            return request is None or request(ev)
        if first.type != "SYSCALL":
            return False
        fields = dict(first.field_items())
        if not any(rule_matches(r, fields) for r in rules):
            return False
        return request is None or request(ev)

    return want
