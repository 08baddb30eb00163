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
from audtrace.compat.record import Event, inet_address
from audtrace.compat.rules import Rule
from audtrace.tracer import declare, options
from audtrace.tracer.audit.match import address_filter, all_of, process_filter
from audtrace.tracer.bind import conflict, report
from audtrace.tracer.bind.conflict import Conflict, Mechanism
from audtrace.tracer.bind.holders import Diagnosis, diagnose_event
from audtrace.tracer.bind.records import holder_event, holder_record, holders_of
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import event_of, proctitle_record, sockaddr_record, syscall_record
from audtrace.tracer.session import Subcommand

FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}


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
        return inet_address(self.family, self.saddr or b"")


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
    mask = sum(1 if f == "inet" else 2 for f in set(req.families))
    # the addresses are compiled in (ADDR_WANTED): a map key holds 15 bytes of bytes keys
    return declare.program(
        "bind.c", ("bind",), {"FAMILY_MASK": mask, "ONLY_FAILED": int(req.failed),
                              "FILTER_ADDR": int(bool(req.addrs)), "SELF_TGID": os.getpid(),
                              "ADDR_WANTED(fam, w)": addr_match(req.addrs), **mech.defines},
        pids=req.pids, comms=req.comms, maps={"filter_port": list(req.ports)})


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x, saddr = d.with_sockaddr(extra)
    ev.detail = BindDetail(addrlen=x.addrlen, saddr=saddr, family=x.family,
                           port=x.port, netns=x.netns, audit_context=bool(x.audit_ctx),
                           conflict=conflict.seen(x, d.const))
    return ev


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> list[Event]:
    """The bind event, then one USER event per holding process (the session gives those
    their serials)."""
    d: BindDetail = ev.detail
    diagnose_event(ev)
    records = [syscall_record(ev, keys)]
    if d.saddr is not None:
        records.append(sockaddr_record(d.saddr))
    extra: list[Event] = []
    for h in holders_of(d):
        for p in h.owners or [None]:
            records.append(holder_record(h, p, d))
            if p is not None:
                extra.append(holder_event(h, p, ev, keys, 0))
    records.append(proctitle_record(ev.who))
    if d.diagnosis is not None:
        report.explain(ev, holders_of(d))
    return [event_of(ev, records, serial), *extra]


def audit_rules(req: BindRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S bind [-F saddr_fam=N] [-F success=0] [-F pid=P]
    -F key=K`. Ports, addresses and comm have no audit rule field: kernel audit reports
    every bind the other fields allow, and compare says so."""
    # not audtrace's own binds (the netlink sockets of its lookups), as in bpf/bind.c
    fields: declare.Fields = [("pid", "!=", os.getpid())]
    if len(set(req.families)) == 1:
        fields.append(("saddr_fam", "=", FAMILIES[req.families[0]]))
    if req.failed:
        fields.append(("success", "=", 0))
    return declare.audit_rules(["bind"], keys, fields, arch, pid=req.pids)


def audit_filter(req: BindRequest):
    """--port, --addr, --comm (audit rules have no such fields) and several --family (a
    rule takes one saddr_fam) on relayed events, as the eBPF side applies them: from the
    SOCKADDR record and SYSCALL's comm. --pid is in the rules."""
    fams = [FAMILIES[f] for f in req.families] if len(set(req.families)) > 1 else []
    return all_of(process_filter(comms=req.comms),
                  address_filter(req.ports, req.addrs, fams))


def subcommand(req: BindRequest, keys: list[str]) -> Subcommand:
    mech = conflict.choose(req.conflict)
    return Subcommand(name="bind", program=program(req, mech), decode=decode,
                      to_audit=to_audit, audit_rules=audit_rules(req, keys),
                      audit_filter=audit_filter(req),
                      mechanism=f"eBPF, conflicts by {mech.name} ({mech.detail})")


# ---- the command line ----------------------------------------------------------------

@declare.command(subcommand)
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
def command(_common, **request) -> BindRequest:
    """Binds and their failures; on EADDRINUSE, who holds the port and how to prevent it."""
    request.update(families=list(request["families"]),
                   conflict=None if request["conflict"] == "auto" else request["conflict"])
    return BindRequest(**request)
