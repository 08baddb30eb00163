"""`audtrace net`: connect and accept/accept4 with the address, success and failure.

bpf/net.c: SYSCALL, SOCKADDR (connect: the address asked for, copied at entry; accept:
the peer, read back from the caller's buffer at exit), PROCTITLE, as audit writes them.
`--port`/`--addr`/`--comm` filter in the kernel; audit rules cannot (only `saddr_fam`), so
with `--source audit|both` they are applied to the relayed events (their SOCKADDR and comm).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import click
from audtrace.compat.record import Event
from audtrace.compat.rules import Rule, rule_syscalls
from audtrace.tracer import options
from audtrace.tracer import records as audit_records
from audtrace.tracer.audit.match import all_of, each, process_filter
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.subcommands.bind import addr_key, address_filter

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


def program(req: NetRequest) -> ProgramSpec:
    filters: dict[str, list[int | bytes]] = {
        "filter_pid": list(req.pids), "filter_comm": [c.encode() for c in req.comms],
        "filter_port": list(req.ports), "filter_addr": [addr_key(a) for a in req.addrs],
    }
    defines: dict[str, int | str] = {"FILTER_UID": 0}
    for name, keys in filters.items():
        defines[name.upper()] = int(bool(keys))
    return ProgramSpec("net.c", SYSCALLS, defines, {k: v for k, v in filters.items() if v})


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x, saddr = d.with_sockaddr(extra)
    ev.detail = NetDetail(saddr=saddr, addrlen=x.addrlen, port=x.port)
    return ev


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    d: NetDetail = ev.detail
    records = [audit_records.syscall_record(ev, keys)]
    if d.saddr is not None:
        records.append(audit_records.sockaddr_record(d.saddr))
    records.append(audit_records.proctitle_record(ev.who))
    return audit_records.event_of(ev, records, serial)


def audit_rules(req: NetRequest, keys: list[str], arch: str = "b64") -> list[Rule]:
    """`-a always,exit -F arch=b64 -S connect -S accept -S accept4 [-F pid=P] -k KEY`."""
    nrs = rule_syscalls(arch, SYSCALLS)
    fields: list[tuple[str, str, int | str]] = [("arch", "=", arch)]
    fams = {ipaddress.ip_address(a).version for a in req.addrs}
    if len(fams) == 1:
        fields.append(("saddr_fam", "=", 2 if fams == {4} else 10))
    tail: list[tuple[str, str, int | str]] = [("key", "=", k) for k in keys]
    return [Rule(syscalls=nrs, fields=f) for f in each(fields, tail, pid=req.pids)]


def audit_filter(req: NetRequest):
    """--comm, --port, --addr (no audit rule field) on the relayed events: the port and
    address of connect's SOCKADDR (the remote end) and accept's (the peer), as bpf/net.c
    reads them. --pid is in the rules."""
    return all_of(process_filter(comms=req.comms), address_filter(req.ports, req.addrs))


def subcommand(req: NetRequest, keys: list[str]):
    from audtrace.tracer.session import Subcommand

    return Subcommand(name="net", program=program(req), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(req, keys), audit_filter=audit_filter(req))


@click.command()
@click.option("--port", "ports", multiple=True, callback=options.ints("port", 0, 65535),
              help="Only this port (connect: the remote one; accept: the peer's).")
@click.option("--addr", "addrs", multiple=True, callback=options.addresses,
              help="Only this address (connect: remote; accept: the peer).")
@options.pid_option()
@options.comm_option()
@options.common_options
def command(ports, addrs, pids, comms, **common) -> None:
    """Outgoing connects and accepted connections, with the address, success and failure."""
    req = NetRequest(ports=ports, addrs=addrs, pids=pids, comms=comms)
    options.run(subcommand(req, list(common["keys"])), common)
