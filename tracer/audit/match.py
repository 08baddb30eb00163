"""Which records on the audit multicast group answer this run's request.

The multicast group carries every record the kernel emits: other rules' events, auditd's,
other tools'. A run relays only the events its own rules match (judged as the kernel judges
them, on arch, syscall and the compared fields), and the CONFIG_CHANGE records of its own
rule changes. The key is not compared: when an earlier rule of the administrator's matches
the same syscall, the kernel writes that rule's key, and the event is still ours.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable

from audtrace.compat.record import Event, dec_str, inet_address
from audtrace.compat.rules import Rule

_NUMERIC = {"pid", "ppid", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid",
            "auid", "ses", "exit"}
_HEX = {"a0", "a1", "a2", "a3"}
# `-F gid=N` / `-F egid=N` match a task whose supplementary groups hold N (the kernel's
# groups_search), which a SYSCALL record does not list
_GROUP = {"gid", "egid"}


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


def rule_matches(rule: Rule, fields: dict[str, str]) -> bool:
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
            if name in _GROUP and op == "=" and have != want:
                continue    # the kernel also matches a supplementary group: not in the record
            if have is not None and not _compare(have, op, want):
                return False
    return True


def relay_filter(rules: list[Rule], request: Callable[[Event], bool] | None = None,
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


def process_filter(pids: list[int] = (), uids: list[int] = (),
                   comms: list[str] = ()) -> Callable[[Event], bool] | None:
    """--pid/--uid/--comm on a relayed event, as the eBPF side applies them: the pid (tgid),
    real uid and comm of its first record (SYSCALL, or ANOM_ABEND, which carry them).
    None when nothing is asked."""
    if not (pids or uids or comms):
        return None
    want_pids, want_uids = set(pids), set(uids)
    want_comms = {c.encode() for c in comms}

    def keep(ev: Event) -> bool:
        rec = ev.records[0]
        if want_pids and _value("pid", rec.get("pid")) not in want_pids:
            return False
        if want_uids and _value("uid", rec.get("uid")) not in want_uids:
            return False
        return not want_comms or dec_str(rec.get("comm")) in want_comms

    return keep


def sockaddr_of(text: str | None) -> tuple[int, int | None, str | None]:
    """(family, port, address) of a SOCKADDR record's saddr hex; port and address only for
    inet/inet6, as bpf/bind.c and bpf/net.c read them."""
    try:
        raw = bytes.fromhex(text or "")
    except ValueError:
        return 0, None, None
    fam = int.from_bytes(raw[:2], sys.byteorder) if len(raw) >= 2 else 0
    addr = inet_address(fam, raw)
    return fam, (int.from_bytes(raw[2:4], "big") if addr else None), addr


def address_filter(ports: list[int], addrs: list[str], families: list[int] = ()):
    """--port, --addr (and --family) on a relayed event, from its SOCKADDR record as the
    eBPF side reads the same bytes; None when nothing is asked. An event without a
    SOCKADDR has no address to match."""
    want_addrs = {ipaddress.ip_address(a) for a in addrs}
    if not (ports or want_addrs or families):
        return None

    def keep(ev: Event) -> bool:
        sa = next((r for r in ev.records if r.type == "SOCKADDR"), None)
        fam, port, addr = sockaddr_of(sa.get("saddr") if sa is not None else None)
        if families and fam not in families:
            return False
        if ports and port not in ports:
            return False
        return not want_addrs or (addr is not None and ipaddress.ip_address(addr) in want_addrs)

    return keep


def all_of(*filters: Callable[[Event], bool] | None) -> Callable[[Event], bool] | None:
    """One relay filter keeping what every given filter keeps (None ones ignored)."""
    active = [f for f in filters if f is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda ev: all(f(ev) for f in active)
