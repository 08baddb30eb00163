"""The human side of a bind conflict: a few lines on stderr as each failure arrives.

Who holds the port (pids, comm, command line, socket state and 4-tuple, which mechanism
saw it), whether the port lies in the namespace's ip_local_port_range and is held by a
client connection (an ephemeral port), whether ip_local_reserved_ports covers it, and the
commands that would keep the kernel from handing it out again.
"""

from __future__ import annotations

import sys

from audtrace.tracer.bind.holders import Diagnosis, HeldSocket


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _cmdline(raw: bytes, limit: int = 160) -> str:
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    text = text.encode("unicode_escape").decode()     # one line, whatever argv holds
    return text if len(text) <= limit else text[:limit] + "..."


def holder_lines(holders: list[HeldSocket]) -> list[str]:
    out = []
    for h in holders:
        sock = (f"{h.proto} {h.state} {_endpoint(h.laddr, h.lport)}"
                + (f" -> {_endpoint(h.raddr, h.rport)}" if h.rport else "")
                + f" inode {h.inode}")
        if h.reuse is not None:
            sock += f" SO_REUSEADDR={h.reuse} SO_REUSEPORT={h.reuseport}"
        if not h.owners:
            out.append(f"  held by no process we can see ({sock}) [{h.how}]")
        for p in h.owners:
            out.append(f"  held by pid {p.pid} ({p.comm.decode(errors='replace')})"
                       f" `{_cmdline(p.cmdline)}`: {sock} [{h.how}]")
    return out


def summary_lines(what: str, binder: str, diag: Diagnosis,
                  holders: list[HeldSocket]) -> list[str]:
    """The report of one failed bind; pure, for tests."""
    ns = f"netns {diag.netns}" + (f" ({diag.netns_name})" if diag.netns_name else "")
    lines = [f"bind {what} by {binder} failed: EADDRINUSE (Address already in use)"]
    if diag.error:
        lines.append(f"  holder unknown: {diag.error}")
    elif not holders:
        lines.append(f"  no socket on port {diag.port} in {ns} any more (gone since)")
    lines += holder_lines(holders)
    if diag.port_range is not None:
        lo, hi = diag.port_range
        if diag.in_range:
            lines.append(f"  port {diag.port} is in ip_local_port_range {lo}-{hi} of {ns}")
        else:
            lines.append(f"  port {diag.port} is outside ip_local_port_range {lo}-{hi} of {ns}")
    listeners = [h for h in holders if h.state == "LISTEN" or h.state == "UNCONNECTED"]
    if listeners and not diag.ephemeral:
        lines.append(f"  a server socket holds port {diag.port}: two services want it, a"
                     " configuration conflict, not an ephemeral port")
    if diag.ephemeral:
        lines.append(f"  it is an ephemeral port: the kernel gave {diag.port} to an outgoing"
                     " connection as its local port")
    if diag.reserved:
        lines.append(f"  ip_local_reserved_ports ({diag.reserved_text}) already covers it")
    elif diag.reserved_text is not None and diag.in_range:
        lines.append("  ip_local_reserved_ports does not cover it ("
                     + (diag.reserved_text or "empty") + ")")
    fix = diag.fix()
    if fix:
        lines.append(f"  prevent it: {fix[0]}")
        lines.append(f"  persistently: {fix[1]}")
    return lines


def explain(ev, holders: list[HeldSocket]) -> None:
    d = ev.detail
    addr = d.address() or "?"
    who = f"pid {ev.who.pid} ({ev.who.comm.decode(errors='replace')})"
    for line in summary_lines(_endpoint(addr, d.port), who, d.diagnosis, holders):
        print(f"audtrace: {line}", file=sys.stderr, flush=True)
