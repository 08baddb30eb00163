"""Who holds a port, asked right after a bind failed with EADDRINUSE.

The fallback of the bind-conflict path where the kernel offers neither kprobes nor fentry:
sock_diag (inet_diag over NETLINK_SOCK_DIAG, through pyroute2) lists the TCP and UDP
sockets, v4 and v6, of the failing process's network namespace; each socket inode is
mapped to the processes holding it through /proc/*/fd. The namespace is entered by one
short-lived thread (setns(CLONE_NEWNET) changes only the calling thread), which also reads
that namespace's ip_local_port_range and ip_local_reserved_ports: /proc/sys/net shows the
namespace of the task that opens it.

The pure part (ranges, ephemeral judgement, the fix) is separate from the system part.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}
# UDP sockets report TCP_CLOSE when unconnected and TCP_ESTABLISHED when connected
UDP_STATES = {1: "CONNECTED", 7: "UNCONNECTED"}
PROTOS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
RESERVED_CONF = "/etc/sysctl.d/90-audtrace-reserved-ports.conf"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass
class Proc:
    pid: int
    comm: bytes
    cmdline: bytes            # NUL-separated argv, as PROCTITLE keeps it
    uid: int
    auid: int
    ses: int


@dataclass
class HeldSocket:
    proto: str                # "tcp" / "udp"
    family: int
    state: str
    laddr: str
    lport: int
    raddr: str
    rport: int
    inode: int
    uid: int
    how: str                  # "kprobe" (seen at the kernel's decision) or "sock_diag"
    owners: list[Proc] = field(default_factory=list)
    reuse: int | None = None  # SO_REUSEADDR / SO_REUSEPORT: only the kprobe path sees them
    reuseport: int | None = None

    @property
    def client(self) -> bool:
        """A connection this host opened: connected, not a listener."""
        return self.state not in ("LISTEN", "UNCONNECTED", "CLOSE") and self.rport != 0


@dataclass
class Diagnosis:
    port: int
    netns: int
    netns_name: str | None
    holders: list[HeldSocket]
    port_range: tuple[int, int] | None
    reserved_text: str | None       # ip_local_reserved_ports as read ("" when empty)
    error: str | None = None        # why the holders could not be looked up

    @property
    def in_range(self) -> bool:
        return self.port_range is not None and port_in_range(self.port, self.port_range)

    @property
    def reserved(self) -> bool:
        return self.reserved_text is not None and port_in_list(self.port,
                                                               self.reserved_text)

    @property
    def ephemeral(self) -> bool:
        """In the ephemeral range and held by client connections only: the kernel handed
        the port out as the local port of an outgoing connection."""
        return (self.in_range and bool(self.holders)
                and all(h.client for h in self.holders)
                and not any(h.state == "LISTEN" for h in self.holders))

    def fix(self) -> list[str]:
        """Commands that keep the port from being handed out again, or [] when moot."""
        if not self.ephemeral or self.reserved:
            return []
        value = reserved_with(self.port, self.reserved_text or "")
        prefix = f"ip netns exec {self.netns_name} " if self.netns_name else ""
        return [f"{prefix}sysctl -w net.ipv4.ip_local_reserved_ports={value}",
                f"echo 'net.ipv4.ip_local_reserved_ports = {value}' > {RESERVED_CONF}"
                + ("" if not self.netns_name else "  (applies to the initial namespace;"
                   " set it where the namespace is created)")]


# ---- pure helpers --------------------------------------------------------------------------

def parse_range(text: str) -> tuple[int, int]:
    lo, hi = text.split()[:2]
    return int(lo), int(hi)


def port_in_range(port: int, rng: tuple[int, int]) -> bool:
    return rng[0] <= port <= rng[1]


def parse_port_list(text: str) -> list[tuple[int, int]]:
    """ip_local_reserved_ports syntax: "8080,9000-9010" -> [(8080, 8080), (9000, 9010)]."""
    out = []
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def port_in_list(port: int, text: str) -> bool:
    return any(lo <= port <= hi for lo, hi in parse_port_list(text))


def reserved_with(port: int, current: str) -> str:
    """The sysctl value that adds `port` to the reserved list (writing replaces the list)."""
    parts = [p.strip() for p in current.strip().split(",") if p.strip()]
    return ",".join([*parts, str(port)])


def may_conflict(bind_addr: str, family: int, held_addr: str, held_family: int) -> bool:
    """Whether a socket bound to held_addr can stand in the way of binding bind_addr:
    the same address, or a wildcard on either side (v4 and v6 wildcards overlap unless
    IPV6_V6ONLY, which sock_diag does not tell; kept as possible)."""
    a, h = ipaddress.ip_address(bind_addr), ipaddress.ip_address(held_addr)
    if a.is_unspecified or h.is_unspecified:
        return family == held_family or (a.version == 6 and a.is_unspecified) or (
            h.version == 6 and h.is_unspecified)
    if family != held_family:
        mapped = getattr(a if a.version == 6 else h, "ipv4_mapped", None)
        other = h if a.version == 6 else a
        return mapped is not None and mapped == other
    return a == h


# ---- the system part -----------------------------------------------------------------------

def netns_inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def netns_names() -> dict[int, str]:
    """inode -> name of the namespaces `ip netns` knows (bind mounts under /run/netns)."""
    out = {}
    base = Path("/run/netns")
    if base.is_dir():
        for p in base.iterdir():
            ino = netns_inode(p)
            if ino is not None:
                out[ino] = p.name
    return out


def find_netns(pid: int, inum: int) -> str | None:
    """A path that opens network namespace `inum`: the process's own while it lives, else a
    named namespace, else any process that lives in it."""
    own = f"/proc/{pid}/ns/net"
    if netns_inode(own) == inum or (inum == 0 and netns_inode(own) is not None):
        return own
    for ino, name in netns_names().items():
        if ino == inum:
            return f"/run/netns/{name}"
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and netns_inode(p / "ns/net") == inum:
            return str(p / "ns/net")
    return None


def in_netns(path: str, fn):
    """fn() run by a thread that entered the network namespace at `path`."""
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except Exception as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=worker, name="audtrace-netns", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def diag_sockets(port: int) -> list[HeldSocket]:
    """Sockets of the calling thread's network namespace with local port `port`."""
    from pyroute2 import DiagSocket

    found = []
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for proto, name in PROTOS.items():
                for m in ds.get_sock_stats(family=family, protocol=proto):
                    if m["idiag_sport"] != port:
                        continue
                    states = TCP_STATES if name == "tcp" else UDP_STATES
                    found.append(HeldSocket(
                        proto=name, family=family, state=states.get(m["idiag_state"],
                                                                    str(m["idiag_state"])),
                        laddr=m["idiag_src"], lport=m["idiag_sport"], raddr=m["idiag_dst"],
                        rport=m["idiag_dport"], inode=m["idiag_inode"], uid=m["idiag_uid"],
                        how="sock_diag"))
    return found


def _netns_view(port: int) -> tuple[list[HeldSocket], str | None, str | None]:
    return (diag_sockets(port), _read("/proc/sys/net/ipv4/ip_local_port_range"),
            _read("/proc/sys/net/ipv4/ip_local_reserved_ports"))


def socket_owners(inodes: set[int]) -> dict[int, list[int]]:
    """socket inode -> pids (tgids) with an fd on it, from /proc/*/fd."""
    out: dict[int, list[int]] = {}
    if not inodes:
        return out
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fds = os.listdir(p / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(p / "fd" / fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                ino = int(link[8:-1])
                if ino in inodes and int(p.name) not in out.setdefault(ino, []):
                    out[ino].append(int(p.name))
    return out


def proc_info(pid: int) -> Proc | None:
    base = Path("/proc") / str(pid)
    try:
        comm = (base / "comm").read_bytes().rstrip(b"\n")
        cmdline = (base / "cmdline").read_bytes().rstrip(b"\0")
        status = (base / "status").read_text()
        auid = int((base / "loginuid").read_text() or 0xFFFFFFFF)
        ses = int((base / "sessionid").read_text() or 0xFFFFFFFF)
    except (OSError, ValueError):
        return None
    uid = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Uid:"))
    return Proc(pid=pid, comm=comm, cmdline=cmdline, uid=uid, auid=auid, ses=ses)


def socket_proto(pid: int, fd: int) -> str | None:
    """The protocol of another process's socket fd (pidfd_getfd needs ptrace rights: root)."""
    nr = {"x86_64": 438, "aarch64": 438}.get(os.uname().machine)
    if nr is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        dup = _libc.syscall(nr, pidfd, fd, 0)
        if dup < 0:
            return None
        with socket.socket(fileno=dup) as s:
            return PROTOS.get(s.proto)
    except OSError:
        return None
    finally:
        os.close(pidfd)


def attach_owners(holders: list[HeldSocket]) -> None:
    owners = socket_owners({h.inode for h in holders if h.inode})
    for h in holders:
        h.owners = [p for p in map(proc_info, owners.get(h.inode, [])) if p is not None]


def diagnose_event(ev) -> None:
    """After EADDRINUSE: the holders (kernel-seen or looked up now), the port range and the
    reserved ports, kept as the bind event's detail.diagnosis."""
    d = ev.detail
    if ev.ret != -errno.EADDRINUSE or d.family not in (socket.AF_INET, socket.AF_INET6):
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


def diagnose(pid: int, netns: int, fd: int, port: int, bind_addr: str | None,
             family: int) -> Diagnosis:
    """Everything about port `port` in the binder's network namespace, now."""
    names = netns_names()
    path = find_netns(pid, netns)
    if path is None:
        return Diagnosis(port, netns, names.get(netns), [], None, None,
                         error=f"network namespace {netns} is gone (no process left in it)")
    proto = socket_proto(pid, fd)
    try:
        holders, rng, reserved = in_netns(path, lambda: _netns_view(port))
    except OSError as e:
        return Diagnosis(port, netns, names.get(netns), [], None, None, error=str(e))
    holders = [h for h in holders if (proto is None or h.proto == proto)
               and (bind_addr is None or may_conflict(bind_addr, family, h.laddr, h.family))]
    attach_owners(holders)
    return Diagnosis(port, netns, names.get(netns), holders,
                     parse_range(rng) if rng else None,
                     reserved.strip() if reserved is not None else None)
