"""`audtrace net`: connect and accept/accept4 with the address, success and failure.

bpf/net.c: SYSCALL, SOCKADDR (connect: the address asked for, copied at entry; accept:
the peer, read back from the caller's buffer at exit), PROCTITLE, as audit writes them.
`--port`/`--addr`/`--comm` filter in the kernel; audit rules cannot (only `saddr_fam`), so
with `--source audit|both` they are applied to the relayed events (their SOCKADDR and comm).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

import click
from audtrace.compat.record import Event
from audtrace.compat.rules import Rule
from audtrace.tracer import declare, options
from audtrace.tracer.audit.match import address_filter, all_of, process_filter
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import event_of, proctitle_record, sockaddr_record, syscall_record
from audtrace.tracer.session import Subcommand

SYSCALLS = ("connect", "accept", "accept4")


@dataclass
class NetRequest:
    ports: list[int] = field(default_factory=list)
    addrs: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)


@dataclass
class NetDetail:
    saddr: bytes | None
    addrlen: int
    port: int


def addr_key(text: str) -> bytes:
    """An address as bpf/net.c's filter_addr map keys it: u32 family, 16 address bytes."""
    ip = ipaddress.ip_address(text)
    fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return fam.to_bytes(4, "little") + ip.packed.ljust(16, b"\0")


def program(req: NetRequest) -> ProgramSpec:
    return declare.program("net.c", SYSCALLS, pids=req.pids, comms=req.comms,
                           maps={"filter_port": list(req.ports),
                                 "filter_addr": [addr_key(a) for a in req.addrs]})


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x, saddr = d.with_sockaddr(extra)
    ev.detail = NetDetail(saddr=saddr, addrlen=x.addrlen, port=x.port)
    return ev


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    d: NetDetail = ev.detail
    records = [syscall_record(ev, keys)]
    if d.saddr is not None:
        records.append(sockaddr_record(d.saddr))
    records.append(proctitle_record(ev.who))
    return event_of(ev, records, serial)


def audit_rules(req: NetRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S connect -S accept -S accept4 [-F pid=P] -k KEY`."""
    fams = {ipaddress.ip_address(a).version for a in req.addrs}
    fields: declare.Fields = []
    if len(fams) == 1:
        fields.append(("saddr_fam", "=", 2 if fams == {4} else 10))
    return declare.audit_rules(SYSCALLS, keys, fields, arch, pid=req.pids)


def audit_filter(req: NetRequest):
    """--comm, --port, --addr (no audit rule field) on the relayed events: the port and
    address of connect's SOCKADDR (the remote end) and accept's (the peer), as bpf/net.c
    reads them. --pid is in the rules."""
    return all_of(process_filter(comms=req.comms), address_filter(req.ports, req.addrs))


def subcommand(req: NetRequest, keys: list[str]) -> Subcommand:
    return Subcommand(name="net", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req, keys), audit_filter=audit_filter(req))


@declare.command(subcommand)
@click.option("--port", "ports", multiple=True, callback=options.ints("port", 0, 65535),
              help="Only this port (connect: the remote one; accept: the peer's).")
@click.option("--addr", "addrs", multiple=True, callback=options.addresses,
              help="Only this address (connect: remote; accept: the peer).")
@options.pid_option()
@options.comm_option()
def command(_common, **request) -> NetRequest:
    """Outgoing connects and accepted connections, with the address, success and failure."""
    return NetRequest(**request)
