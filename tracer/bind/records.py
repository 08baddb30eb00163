"""A failed bind's holders as audit records: one OBJ_PID each inside the bind event, and a
USER event of its own per holding process, so `ausearch -p HOLDER` finds it (measured: no
record inside the bind event can make ausearch find that event under two pids; see README
"audtrace bind"). `d` is the bind event's detail (tracer/subcommands/bind.py)."""

from __future__ import annotations

import socket

from audtrace.compat.ints import s32
from audtrace.compat.record import Event, Record, enc_int, enc_str
from audtrace.tracer.bind.holders import HeldSocket, Proc
from audtrace.tracer.ebpf.events import SyscallEvent
from audtrace.tracer.records import SRC, enc_key, enc_own_int, event_of

PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
# a holder's command line is cut as PROCTITLE is
CMDLINE_MAX = 128


def holders_of(d) -> list[HeldSocket]:
    """The sockets holding the port: the one the kernel's decision named, else those the
    lookup after the failure found."""
    if d.conflict is not None and d.conflict.owner is not None:
        return [d.conflict.owner]
    return d.diagnosis.holders if d.diagnosis is not None else []


def socket_fields(h: HeldSocket, d) -> list[tuple[str, str]]:
    diag = d.diagnosis
    # proto as its number: `ausearch -i` names it (a quoted "tcp" it would misread)
    fields = [("proto", enc_int(PROTO_NUMBERS[h.proto])), ("state", enc_str(h.state)),
              ("laddr", enc_str(h.laddr)), ("lport", enc_int(h.lport)),
              ("raddr", enc_str(h.raddr)), ("rport", enc_int(h.rport)),
              # the owner's uid, not named *uid: ausearch's parser takes any `uid=` inside a
              # user record's msg for the record's uid and skips the event (-ui)
              ("sock_inode", enc_own_int(h.inode)), ("sock_owner", enc_own_int(h.uid))]
    if h.reuse is not None:
        fields += [("reuse", enc_int(h.reuse)), ("reuseport", enc_int(h.reuseport or 0))]
    fields.append(("netns", enc_own_int(d.netns)))
    if diag is not None:
        if diag.port_range is not None:
            lo, hi = diag.port_range
            fields.append(("port_range", enc_str(f"{lo}-{hi}")))
        fields += [("ephemeral", enc_str("yes" if diag.ephemeral else "no")),
                   ("reserved", enc_str("yes" if diag.reserved else "no"))]
    if d.conflict is not None:
        fields.append(("decision", enc_str(d.conflict.func)))
    fields.append(("how", enc_str(h.how)))
    return fields


def holder_record(h: HeldSocket, p: Proc | None, d) -> Record:
    """OBJ_PID: the process holding the port, as audit names a signal's target."""
    if p is None:   # a socket no process holds (TIME_WAIT, or beyond our pid namespace)
        who = [("opid", "0"), ("oauid", "-1"), ("ouid", enc_int(h.uid)), ("oses", "-1"),
               ("ocomm", enc_str("?"))]
    else:
        who = [("opid", enc_int(p.pid)), ("oauid", enc_int(s32(p.auid))),
               ("ouid", enc_int(p.uid)), ("oses", enc_int(s32(p.ses))),
               ("ocomm", enc_str(p.comm)),
               # named as PROCTITLE's field so `ausearch -i` decodes it the same way
               ("proctitle", enc_str(p.cmdline[:CMDLINE_MAX] or p.comm))]
    return Record("OBJ_PID", [*who, *socket_fields(h, d), SRC])


def holder_event(h: HeldSocket, p: Proc, ev: SyscallEvent, keys: list[str],
                 serial: int) -> Event:
    """The holder on its own, found by `ausearch -p HOLDER` (and -c, -ui, -x)."""
    d = ev.detail
    fields = [("pid", enc_int(p.pid)), ("uid", enc_int(p.uid)), ("auid", enc_int(p.auid)),
              ("ses", enc_int(p.ses)),
              ("msg", "'op=port-held " + " ".join(f"{k}={v}" for k, v in [
                  ("port", enc_int(d.port)), *socket_fields(h, d),
                  ("binder_pid", enc_int(ev.who.pid)), ("comm", enc_str(p.comm)),
                  ("key", enc_key(keys)), ("res", "failed")]) + "'"),
              SRC]
    return event_of(ev, [Record("USER", fields)], serial)
