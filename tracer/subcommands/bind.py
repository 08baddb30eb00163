"""`audtrace bind`: who binds which address, why the kernel refused, who holds the port.

A declaration: the syscall, the in-kernel filters, the audit rules for the same request,
and the records. A failed bind is SYSCALL (`success=no exit=-98`) + SOCKADDR (the sockaddr
bytes copied in the kernel, as audit's own record) + one OBJ_PID per process holding the
port + PROCTITLE; each holder also gets an event of its own, type USER with `pid=` the
holder, so `ausearch -p HOLDER` finds it (measured: no record inside the bind event can
make ausearch find that event under two pids; see README "audtrace bind").
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass, field

import click
from audtrace.compat.ints import s32
from audtrace.compat.record import Event, Record, enc_int, enc_str
from audtrace.compat.rules import Rule, rule_syscalls
from audtrace.tracer import options
from audtrace.tracer import records as audit_records
from audtrace.tracer.audit.match import all_of, process_filter
from audtrace.tracer.bind.conflict import Mechanism
from audtrace.tracer.bind.holders import (
    TCP_STATES,
    Diagnosis,
    HeldSocket,
    Proc,
    attach_owners,
    diagnose,
)
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import enc_own_int

EADDRINUSE = 98
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
CF_FUNCS = {1: "inet_csk_bind_conflict", 2: "udp_lib_get_port"}
PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
# a holder's command line is cut as PROCTITLE is
CMDLINE_MAX = 128


@dataclass
class BindRequest:
    ports: list[int] = field(default_factory=list)
    addrs: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    failed: bool = False
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    conflict: str | None = None         # force a mechanism ("sock_diag"); None: detect


@dataclass
class Conflict:
    """The kernel's own decision, seen by the kprobe path."""
    func: str
    result: int
    port: int
    owner: HeldSocket | None


@dataclass
class BindDetail:
    addrlen: int
    saddr: bytes | None         # None: the kernel copied nothing, audit writes no SOCKADDR
    family: int
    port: int
    netns: int
    audit_context: bool
    conflict: Conflict | None = None
    diagnosis: Diagnosis | None = None

    def address(self) -> str | None:
        s = self.saddr or b""
        if self.family == socket.AF_INET and len(s) >= 8:
            return str(ipaddress.IPv4Address(s[4:8]))
        if self.family == socket.AF_INET6 and len(s) >= 24:
            return str(ipaddress.IPv6Address(s[8:24]))
        return None


def addr_key(text: str) -> bytes:
    """u32 family + 16 address bytes, for a BPF hash keyed by address. (Not used by bind:
    probes.Program._fill_filters keeps 15 bytes of a bytes key, made for comm keys, so
    bind compiles its addresses in as constants, see addr_match.)"""
    ip = ipaddress.ip_address(text)
    fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return fam.to_bytes(4, "little") + ip.packed.ljust(16, b"\0")


def addr_match(addrs: list[str]) -> str:
    """The C expression ADDR_WANTED(fam, w) of bpf/bind.c: true when the sockaddr's address
    words w[0..3] (as the bytes lie in memory, read as host-order u32) equal one of `addrs`."""
    terms = []
    for text in addrs:
        ip = ipaddress.ip_address(text)
        fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        raw = ip.packed.ljust(16, b"\0")
        words = [int.from_bytes(raw[i:i + 4], sys.byteorder) for i in range(0, 16, 4)]
        n = 1 if fam == socket.AF_INET else 4
        cmp = " && ".join(f"(w)[{i}] == {words[i]:#x}U" for i in range(n))
        terms.append(f"((fam) == {fam} && {cmp})")
    return "(" + (" || ".join(terms) or "1") + ")"


def program(req: BindRequest, mech: Mechanism) -> ProgramSpec:
    filters: dict[str, list[int | bytes]] = {
        "filter_pid": list(req.pids), "filter_comm": [c.encode() for c in req.comms],
        "filter_port": list(req.ports),
    }
    mask = sum(1 if f == "inet" else 2 for f in set(req.families))
    defines: dict[str, int | str] = {"FAMILY_MASK": mask, "ONLY_FAILED": int(req.failed),
                                     "FILTER_UID": 0, "FILTER_ADDR": int(bool(req.addrs)),
                                     "SELF_TGID": os.getpid(),
                                     "ADDR_WANTED(fam, w)": addr_match(req.addrs),
                                     **mech.defines}
    for name, keys in filters.items():
        defines[name.upper()] = int(bool(keys))
    return ProgramSpec("bind.c", ("bind",), defines, {k: v for k, v in filters.items() if v})


def _owner(x) -> HeldSocket | None:
    if not x.cf_family:
        return None
    fam = int(x.cf_family)
    raw_l, raw_r = bytes(x.cf_laddr), bytes(x.cf_raddr)
    if fam == socket.AF_INET6:
        laddr, raddr = str(ipaddress.IPv6Address(raw_l)), str(ipaddress.IPv6Address(raw_r))
    else:
        laddr, raddr = str(ipaddress.IPv4Address(raw_l[:4])), str(ipaddress.IPv4Address(raw_r[:4]))
    return HeldSocket(proto="tcp", family=fam, state=TCP_STATES.get(x.cf_state, str(x.cf_state)),
                      laddr=laddr, lport=int(x.cf_lport),
                      raddr=raddr, rport=socket.ntohs(int(x.cf_rport)),
                      inode=int(x.cf_inode), uid=int(x.cf_uid), how="kprobe",
                      reuse=int(x.cf_reuse), reuseport=int(x.cf_reuseport))


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x, saddr = d.with_sockaddr(extra)
    conflict = None
    if x.cf_seen:
        conflict = Conflict(CF_FUNCS.get(x.cf_func, "?"), x.cf_result, x.cf_port, _owner(x))
    ev.detail = BindDetail(addrlen=x.addrlen, saddr=saddr, family=x.family,
                           port=x.port, netns=x.netns, audit_context=bool(x.audit_ctx),
                           conflict=conflict)
    return ev


# ---- records ---------------------------------------------------------------------------

def sockaddr_record(saddr: bytes) -> Record:
    # the kernel writes the bytes as hex, whatever they are (audit_log_n_hex)
    return Record("SOCKADDR", [("saddr", saddr.hex().upper()), audit_records.SRC])


def _socket_fields(h: HeldSocket, d: BindDetail) -> list[tuple[str, str]]:
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


def holder_record(h: HeldSocket, p: Proc | None, d: BindDetail) -> Record:
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
    return Record("OBJ_PID", [*who, *_socket_fields(h, d), audit_records.SRC])


def holder_event(h: HeldSocket, p: Proc, ev: SyscallEvent, keys: list[str],
                 serial: int) -> Event:
    """The holder on its own, found by `ausearch -p HOLDER` (and -c, -ui, -x)."""
    d: BindDetail = ev.detail
    fields = [("pid", enc_int(p.pid)), ("uid", enc_int(p.uid)), ("auid", enc_int(p.auid)),
              ("ses", enc_int(p.ses)),
              ("msg", "'op=port-held " + " ".join(f"{k}={v}" for k, v in [
                  ("port", enc_int(d.port)), *_socket_fields(h, d),
                  ("binder_pid", enc_int(ev.who.pid)), ("comm", enc_str(p.comm)),
                  ("key", audit_records.enc_key(keys)), ("res", "failed")]) + "'"),
              audit_records.SRC]
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    return Event(sec, nsec // 1_000_000, serial, [Record("USER", fields)], "ebpf")


def holders_of(d: BindDetail) -> list[HeldSocket]:
    if d.conflict is not None and d.conflict.owner is not None:
        return [d.conflict.owner]
    return d.diagnosis.holders if d.diagnosis is not None else []


def diagnose_event(ev: SyscallEvent) -> None:
    """After EADDRINUSE: the holders (kernel-seen or sock_diag), range and reserved ports."""
    d: BindDetail = ev.detail
    if ev.ret != -EADDRINUSE or d.family not in FAMILIES.values():
        return
    port = d.port
    if d.conflict is not None and d.conflict.port:
        port = d.conflict.port
    d.diagnosis = diagnose(ev.who.pid, d.netns, int(ev.args[0]) & 0xFFFFFFFF, port,
                           d.address(), d.family)
    owner = d.conflict.owner if d.conflict is not None else None
    if owner is not None:
        attach_owners([owner])
        d.diagnosis.holders = [owner]


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> list[Event]:
    """The bind event, then one USER event per holding process (the session gives those
    their serials)."""
    d: BindDetail = ev.detail
    diagnose_event(ev)
    records = [audit_records.syscall_record(ev, keys)]
    if d.saddr is not None:
        records.append(sockaddr_record(d.saddr))
    extra: list[Event] = []
    for h in holders_of(d):
        for p in h.owners or [None]:
            records.append(holder_record(h, p, d))
            if p is not None:
                extra.append(holder_event(h, p, ev, keys, 0))
    records.append(audit_records.proctitle_record(ev.who))
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    if d.diagnosis is not None:
        from audtrace.tracer.bind.report import explain

        explain(ev, holders_of(d))
    return [Event(sec, nsec // 1_000_000, serial, records, "ebpf"), *extra]


def audit_rules(req: BindRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S bind [-F saddr_fam=N] [-F success=0] [-F pid=P]
    -F key=K`. Ports, addresses and comm have no audit rule field: kernel audit reports
    every bind the other fields allow, and compare says so."""
    nrs = rule_syscalls(arch, ["bind"])
    if not nrs:
        return []
    # not audtrace's own binds (the netlink sockets of its lookups), as in bpf/bind.c
    base: list[tuple[str, str, int | str]] = [("arch", "=", arch), ("pid", "!=", os.getpid())]
    if len(set(req.families)) == 1:
        base.append(("saddr_fam", "=", FAMILIES[req.families[0]]))
    if req.failed:
        base.append(("success", "=", 0))
    tail = [("key", "=", k) for k in keys]
    pids = req.pids or [None]
    return [Rule(syscalls=nrs, fields=[*base, *([("pid", "=", p)] if p else []), *tail])
            for p in pids]


def sockaddr_of(text: str | None) -> tuple[int, int | None, str | None]:
    """(family, port, address) of a SOCKADDR record's saddr hex; port/address only for
    inet/inet6 (the port and address bpf/bind.c filters on)."""
    try:
        raw = bytes.fromhex(text or "")
    except ValueError:
        return 0, None, None
    fam = int.from_bytes(raw[:2], sys.byteorder) if len(raw) >= 2 else 0
    d = BindDetail(len(raw), raw, fam, 0, 0, False)
    addr = d.address()
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


def audit_filter(req: BindRequest):
    """--port, --addr, --comm (audit rules have no such fields) and several --family (a
    rule takes one saddr_fam) on relayed events, as the eBPF side applies them: from the
    SOCKADDR record and SYSCALL's comm. --pid is in the rules."""
    fams = [FAMILIES[f] for f in req.families] if len(set(req.families)) > 1 else []
    return all_of(process_filter(comms=req.comms),
                  address_filter(req.ports, req.addrs, fams))


def subcommand(req: BindRequest, keys: list[str]):
    from audtrace.tracer.bind import conflict as bind_conflict
    from audtrace.tracer.session import Subcommand

    mech = bind_conflict.choose(req.conflict)
    return Subcommand(name="bind", program=program(req, mech), decode=decode,
                      to_audit=to_audit, audit_rules=audit_rules(req, keys),
                      audit_filter=audit_filter(req),
                      mechanism=f"eBPF tracepoints, conflicts by {mech.name} ({mech.detail})")


# ---- the command line ----------------------------------------------------------------

@click.command()
@click.option("--port", "ports", multiple=True, callback=options.ints("port", 0, 65535),
              help="Only binds to this port (repeatable, comma lists).")
@click.option("--addr", "addrs", multiple=True, callback=options.addresses,
              help="Only binds to this address (127.0.0.1, ::1, 0.0.0.0...).")
@click.option("--family", "families", multiple=True, type=click.Choice(tuple(FAMILIES)),
              help="Only this address family.")
@click.option("--failed", is_flag=True, help="Only binds that fail.")
@options.pid_option()
@options.comm_option()
@click.option("--conflict", type=click.Choice(("auto", "sock_diag")), default="auto",
              show_default=True,
              help="How holders are found: kprobes where the kernel has them, else sock_diag;"
              " sock_diag forces the lookup after the failure.")
@options.common_options
def command(ports, addrs, families, failed, pids, comms, conflict, **common) -> None:
    """Binds and their failures; on EADDRINUSE, who holds the port and how to prevent it."""
    req = BindRequest(ports=ports, addrs=addrs, families=list(families), failed=failed,
                      pids=pids, comms=comms,
                      conflict=None if conflict == "auto" else conflict)
    options.run(subcommand(req, list(common["keys"])), common)
