"""Every filter a subcommand accepts holds on its kernel audit side too: in the rules it
loads, or in the filter applied to the relayed events (or the command refuses it).

Each case builds the subcommand's rules and relay filter as a `--source audit` run would,
then checks that a kernel event answering the whole request is relayed and that an event
failing any one filter is not.
"""

from __future__ import annotations

import os
import socket

import pytest
from audtrace.compat.record import Event, Record
from audtrace.tracer.audit.match import relay_filter
from audtrace.tracer.subcommands import bind, exec, exit, ioctl, net
from click.testing import CliRunner


def syscall(nr: int, pid: int = 101, uid: int = 0, comm: str = "a", a0: int = 0,
            a1: int = 0, exe: str = "/usr/bin/a", exit_: int | None = 0) -> Record:
    result = f"success={'yes' if exit_ >= 0 else 'no'} exit={exit_} " if exit_ is not None else ""
    return Record("SYSCALL", body=(
        f"arch=c000003e syscall={nr} {result}a0={a0:x} a1={a1:x} a2=0 a3=0 items=0 ppid=1 "
        f"pid={pid} auid=1000 uid={uid} gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 "
        f'tty=(none) ses=1 comm="{comm}" exe="{exe}" key="k"'))


def abend(pid: int = 101, comm: str = "a", exe: str = "/usr/bin/a") -> Record:
    return Record("ANOM_ABEND", body=(
        f'auid=1000 uid=0 gid=0 ses=1 pid={pid} comm="{comm}" exe="{exe}" sig=6 res=1'))


def sockaddr(family: int = socket.AF_INET, port: int = 443, addr: str = "10.1.1.1") -> Record:
    raw = family.to_bytes(2, "little")
    if family == socket.AF_INET:
        raw += port.to_bytes(2, "big") + socket.inet_aton(addr) + bytes(8)
    elif family == socket.AF_INET6:
        raw += port.to_bytes(2, "big") + bytes(4) + socket.inet_pton(socket.AF_INET6, addr)
        raw += bytes(4)
    else:
        raw += b"/run/x.sock\0"
    return Record("SOCKADDR", body=f"saddr={raw.hex().upper()}")


def relayed(module, req, *records: Record) -> bool:
    keep = relay_filter(module.audit_rules(req, ["k"]), module.audit_filter(req),
                        ("ANOM_ABEND",) if module is exit else ())
    return keep(Event(1, 2, 3, list(records), "audit"))


def exec_relayed(req: exec.ExecRequest, rec: Record) -> bool:
    sub = exec.subcommand(req, ["k"])
    return relay_filter(sub.audit_rules, sub.audit_filter)(Event(1, 2, 3, [rec], "audit"))


def test_exec_every_pid_and_uid():
    req = exec.ExecRequest(pids=[101, 102], uids=[5, 6])
    assert len(exec.audit_rules(req, ["k"])) == 4       # one per (pid, uid)
    assert exec_relayed(req, syscall(59, pid=102, uid=5))
    assert exec_relayed(req, syscall(59, pid=101, uid=6))
    assert not exec_relayed(req, syscall(59, pid=103, uid=5))
    assert not exec_relayed(req, syscall(59, pid=101, uid=7))
    assert not exec_relayed(req, syscall(62, pid=101, uid=5))


def test_exec_comm_is_refused_on_the_audit_side():
    r = CliRunner().invoke(exec.command, ["--comm", "bash", "--source", "audit"])
    assert r.exit_code == 2 and "use --source ebpf" in r.output


def test_exit_every_pid_comm_and_the_kernels_abend():
    req = exit.ExitRequest(pids=[101, 102], comms=["a"])
    assert len(exit.audit_rules(req, ["k"])) == 2
    assert relayed(exit, req, syscall(231, pid=102, exit_=None))
    assert not relayed(exit, req, syscall(231, pid=103, exit_=None))
    assert not relayed(exit, req, syscall(231, pid=101, comm="b", exit_=None))
    assert relayed(exit, req, abend(pid=101))
    assert not relayed(exit, req, abend(pid=103))
    assert not relayed(exit, req, abend(pid=101, comm="b"))


def test_exit_exe_and_code_on_the_kernels_abend(tmp_path):
    target = tmp_path / "prog"
    target.write_text("")
    link = tmp_path / "link"
    link.symlink_to(target)
    req = exit.ExitRequest(exe=str(link))
    assert relayed(exit, req, abend(exe=str(target)))
    assert not relayed(exit, req, abend(exe="/usr/bin/other"))
    coded = exit.ExitRequest(code=3)
    assert relayed(exit, coded, syscall(231, a0=3, exit_=None))
    assert not relayed(exit, coded, syscall(231, a0=4, exit_=None))
    assert not relayed(exit, coded, abend())    # a death by signal made no exit call


def test_net_port_addr_comm_pid():
    req = net.NetRequest(ports=[443], addrs=["10.1.1.1"], pids=[101, 102], comms=["curl"])
    assert len(net.audit_rules(req, ["k"])) == 2
    good = (syscall(42, pid=102, comm="curl", exit_=-111), sockaddr())
    assert relayed(net, req, *good)
    assert not relayed(net, req, syscall(42, pid=103, comm="curl"), sockaddr())
    assert not relayed(net, req, syscall(42, pid=101, comm="wget"), sockaddr())
    assert not relayed(net, req, good[0], sockaddr(port=80))
    assert not relayed(net, req, good[0], sockaddr(addr="10.1.1.2"))
    assert not relayed(net, req, good[0])        # a failed accept: no address


def test_ioctl_request_pid_comm_and_path_refused():
    req = ioctl.IoctlRequest(requests=[0x5401, 0x5413], pids=[101, 102], comms=["stty"])
    assert len(ioctl.audit_rules(req, ["k"])) == 4
    assert relayed(ioctl, req, syscall(16, pid=102, comm="stty", a1=0x5413))
    assert not relayed(ioctl, req, syscall(16, pid=102, comm="stty", a1=0x5402))
    assert not relayed(ioctl, req, syscall(16, pid=103, comm="stty", a1=0x5401))
    assert not relayed(ioctl, req, syscall(16, pid=101, comm="ls", a1=0x5401))
    r = CliRunner().invoke(ioctl.command, ["--path", os.devnull, "--source", "both"])
    assert r.exit_code == 2 and "use --source ebpf" in r.output


@pytest.mark.parametrize("families", [["inet"], ["inet", "inet6"]])
def test_bind_families_port_comm(families):
    req = bind.BindRequest(families=families, ports=[8080], comms=["svc"], pids=[101])
    assert relayed(bind, req, syscall(49, comm="svc"), sockaddr(port=8080))
    assert not relayed(bind, req, syscall(49, comm="svc"), sockaddr(socket.AF_UNIX))
    assert not relayed(bind, req, syscall(49, comm="svc"), sockaddr(port=8081))
    assert not relayed(bind, req, syscall(49, comm="other"), sockaddr(port=8080))
    assert not relayed(bind, req, syscall(49, pid=102, comm="svc"), sockaddr(port=8080))
    if len(families) == 2:
        assert relayed(bind, req, syscall(49, comm="svc"),
                       sockaddr(socket.AF_INET6, 8080, "::1"))
