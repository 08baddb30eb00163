"""A fixed corpus of varied events, built into audit Events by today's own code.

tests/unit/test_output_corpus.py renders it in every output format and compares the bytes
with tests/data/golden/*.out. The corpus is data: each case has a short name saying what
it exercises, a number `n`, and what goes in:

- eBPF cases: a normalized event (tracer/ebpf/events.py, with its subcommand's detail) passed
  through that subcommand's own `to_audit`, as tracer/session.py does. The session gives
  serials as it writes; here they are fixed: case n's k-th event gets serial
  `EBPF_SERIAL | (10 * n + k)` (bit 31 and slot 5 in bits 25..30, the session's layout),
  and its time stamp is `stamp_ns(n)`.
- relayed cases: records as the kernel sends them over NETLINK_AUDIT, `audit(S.MMM:N): body`
  (stamp from `stamp_ns(n)`, serial `1000 + n`), parsed as tracer/audit/source.py parses
  them: compat.record.parse_netlink, then Record(type name, body=...); EOE ends the event
  and is not a record of it.
- loss cases: the session's own DAEMON_ERR record, made by Session._report_loss.

Side effects neutralized (see `_bind_lookups`): bind's to_audit looks the port's holders up
with sock_diag on EADDRINUSE (`diagnose`, `attach_owners`) and prints a summary to stderr
(`bind_report.explain`). While a bind case is built, `diagnose` returns the Diagnosis the
case carries in its BindDetail, `attach_owners` does nothing (owners are in the case data)
and `explain` prints nothing.

Names in enriched/interpreted/json output come from the user database: only uids/gids
that Debian's base-passwd fixes are used (0 root, 1 daemon, 65534 nobody/nogroup, group
42 shadow), and 4242, which must exist nowhere (`names_as_expected` checks the machine).

When the event path is reworked, only `build_case` (and `_loss_events`, which drives the
session) may need adapting; the cases and the golden files stay.
"""

from __future__ import annotations

import copy
import grp
import pwd
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from unittest import mock

from audtrace.compat import rules as R
from audtrace.compat.record import Event, Record, parse_netlink, record_type_name
from audtrace.compat.tables import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64
from audtrace.tracer import records as audit_records
from audtrace.tracer.bind import holders as bind_holders
from audtrace.tracer.bind import report as bind_report
from audtrace.tracer.bind.conflict import Conflict
from audtrace.tracer.bind.holders import Diagnosis, HeldSocket, Proc
from audtrace.tracer.ebpf import rule_filter
from audtrace.tracer.ebpf.events import FileInfo, Identity, KernelSignal, SyscallEvent, Target
from audtrace.tracer.subcommands import bind, clock, ioctl, kill, latency, net, rules
from audtrace.tracer.subcommands import exec as exec_
from audtrace.tracer.subcommands import exit as exit_
from audtrace.tracer.subcommands.bind import BindDetail
from audtrace.tracer.subcommands.clock import ASKED_OFFSET, ASKED_TIME, ClockDetail
from audtrace.tracer.subcommands.exec import ExecDetail
from audtrace.tracer.subcommands.exit import ExitDetail
from audtrace.tracer.subcommands.net import NetDetail

UNSET = 0xFFFFFFFF
T0 = 1795318755                         # 2026-11-22 03:39:15 UTC
EBPF_SERIAL = (1 << 31) | (5 << 25)
KERNEL_SERIAL = 1000
AUDIT_EOE = 1320
NETNS = 4026531840
X86_64, I386 = AUDIT_ARCH_X86_64, AUDIT_ARCH_I386

# x86_64 syscall numbers (i386 ones where noted)
NR = {"read": 0, "lseek": 8, "ioctl": 16, "nanosleep": 35, "connect": 42, "accept": 43,
      "sendto": 44, "bind": 49, "execve": 59, "exit": 60, "wait4": 61, "kill": 62,
      "unlink": 87, "rt_sigqueueinfo": 129, "adjtimex": 159, "settimeofday": 164,
      "tkill": 200, "clock_settime": 227, "exit_group": 231, "tgkill": 234, "openat": 257,
      "accept4": 288, "rt_tgsigqueueinfo": 297, "clock_adjtime": 305, "execveat": 322,
      "pidfd_send_signal": 424, "i386:kill": 37,
      "task-exit": -1}   # not a syscall: how exit.decode marks a death by signal

# the user names these tests rely on: Debian's base-passwd fixes them
NAMES = {"uid": {0: "root", 1: "daemon", 65534: "nobody"},
         "gid": {0: "root", 1: "daemon", 42: "shadow", 65534: "nogroup"}}
NOBODY_KNOWS = 4242                     # neither a user nor a group anywhere


def names_as_expected() -> str | None:
    """None when this machine's user database gives the names the golden files hold,
    else what differs."""
    for uid, name in NAMES["uid"].items():
        try:
            if pwd.getpwuid(uid).pw_name != name:
                return f"uid {uid} is {pwd.getpwuid(uid).pw_name!r} here, not {name!r}"
        except KeyError:
            return f"uid {uid} ({name}) does not exist here"
    for gid, name in NAMES["gid"].items():
        try:
            if grp.getgrgid(gid).gr_name != name:
                return f"gid {gid} is {grp.getgrgid(gid).gr_name!r} here, not {name!r}"
        except KeyError:
            return f"gid {gid} ({name}) does not exist here"
    for lookup, what in ((pwd.getpwuid, "uid"), (grp.getgrgid, "gid")):
        try:
            lookup(NOBODY_KNOWS)
            return f"{what} {NOBODY_KNOWS} exists here; the corpus needs it unknown"
        except KeyError:
            pass
    return None


def stamp_ns(n: int) -> int:
    """Case n's time: one second apart, milliseconds varied (000 included), sub-ms noise."""
    return (T0 + n) * 1_000_000_000 + (n * 71 % 1000) * 1_000_000 + 654_321


# ---- the parts events are made of ---------------------------------------------------------

def who(pid: int, comm: bytes, *, exe: bytes | None, proctitle: bytes = b"", ppid: int = 1,
        uid: int = 0, gid: int | None = None, auid: int = UNSET, ses: int = UNSET,
        tty: str | None = None, **creds: int) -> Identity:
    """A task; euid/suid/fsuid follow uid and egid/sgid/fsgid gid unless given."""
    gid = uid if gid is None else gid
    ids = {"euid": uid, "suid": uid, "fsuid": uid, "egid": gid, "sgid": gid, "fsgid": gid}
    ids.update(creds)
    return Identity(pid=pid, ppid=ppid, auid=auid, ses=ses, uid=uid, gid=gid,
                    comm=comm, tty=tty, exe=exe, proctitle=proctitle, **ids)


# root with no login (a cron job, a service): auid and ses unset, no tty
ROOT = who(2454, b"kill", ppid=2452, exe=b"/usr/bin/kill", proctitle=b"/bin/kill\0-15\x002453")
# a logged-in user unknown to the user database, on a pseudo-terminal
ALICE = who(3100, b"bash", ppid=3099, uid=NOBODY_KNOWS, auid=NOBODY_KNOWS, ses=3, tty="pts0",
            exe=b"/usr/bin/bash", proctitle=b"-bash")
# root logged in on the serial console
CONSOLE = who(700, b"bash", ppid=690, auid=0, ses=1, tty="ttyS0", exe=b"/usr/bin/bash",
              proctitle=b"-bash")
# a service as daemon (uid/gid 1)
DAEMON = who(880, b"svc", uid=1, exe=b"/usr/sbin/svc",
             proctitle=b"/usr/sbin/svc\0--port\x0048616")
# a worker as nobody/nogroup, with a login session
NOBODY = who(1500, b"worker", ppid=1499, uid=65534, auid=0, ses=9, exe=b"/usr/bin/python3.11",
             proctitle=b"python3\0/srv/worker.py")
# a setuid-root program run by ALICE: uid stays hers, euid/suid/fsuid root
SETUID = who(3200, b"passwd", ppid=3100, uid=NOBODY_KNOWS, euid=0, suid=0, fsuid=0,
             auid=NOBODY_KNOWS, ses=3, tty="pts0", exe=b"/usr/bin/passwd", proctitle=b"passwd")

LONG_EXE = b"/" + b"/".join(b"component-%02d-" % i + b"x" * 28 for i in range(14))
LONG_TITLE = b"python3\0-c\0" + b"import time; time.sleep(1000)  # " + b"y" * 160


def target(pid: int, comm: bytes, uid: int = 0, auid: int = UNSET, ses: int = UNSET) -> Target:
    return Target(pid=pid, auid=auid, uid=uid, ses=ses, comm=comm)


SLEEP = target(2453, b"sleep")
ODD_TARGETS = [
    target(4001, b"sleep", uid=NOBODY_KNOWS, auid=NOBODY_KNOWS, ses=3),
    target(4002, b"my prog"),                         # a space: hex
    target(4003, b'say "hi"'),                        # a quote: hex
    target(4004, b"\xff\xfecaf\xc3"),                 # not UTF-8
    target(4005, b"tab\there\x1b[0m"),                # control bytes
    target(4006, b""),                                # empty
    target(4007, b"0123456789abcde", uid=1, auid=0, ses=1),   # TASK_COMM_LEN - 1
    target(4008, b"caf\xc3\xa9-\xe2\x9c\x93", uid=65534),      # UTF-8, not ASCII
]


def syscall(nr: str, args: tuple[int, int, int, int], ret: int, task: Identity, *,
            targets: list[Target] | None = None, detail: object = None, arch: int = X86_64,
            dropped: int = 0) -> SyscallEvent:
    """A syscall event; its time is set from the case number when built."""
    return SyscallEvent(time_ns=0, arch=arch, nr=NR[nr], args=args, ret=ret, who=task,
                        targets=list(targets or []), targets_dropped=dropped, detail=detail)


def ksignal(sig: int, code: int, result: int, context: Identity, victim: Target,
            group: bool = False) -> KernelSignal:
    return KernelSignal(time_ns=0, sig=sig, si_code=code, result=result, group=group,
                        context=context, victim=victim)


def sin(addr: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + port.to_bytes(2, "big") + \
        socket.inet_aton(addr) + bytes(8)


def sin6(addr: str, port: int, scope: int = 0) -> bytes:
    return struct.pack("=H", socket.AF_INET6) + port.to_bytes(2, "big") + bytes(4) + \
        socket.inet_pton(socket.AF_INET6, addr) + struct.pack("=I", scope)


def sun(path: bytes) -> bytes:
    return struct.pack("=H", socket.AF_UNIX) + path


def dev(major: int, minor: int) -> int:
    return major << 20 | minor


def bind_detail(saddr: bytes | None, family: int, port: int, **kw) -> BindDetail:
    return BindDetail(addrlen=len(saddr or b""), saddr=saddr, family=family, port=port,
                      netns=NETNS, audit_context=True, **kw)


# ---- cases ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    n: int                      # time stamp and serials; unique
    name: str
    kind: str                   # "ebpf", "relayed", "loss"
    data: object                # normalized event / wire records / loss counts
    to_audit: Callable | None = None
    keys: tuple[str, ...] = ()
    node: str | None = None


CASES: list[Case] = []


def ebpf(n: int, name: str, to_audit: Callable, event: object, keys: tuple[str, ...] = (),
         node: str | None = None) -> None:
    CASES.append(Case(n, name, "ebpf", event, to_audit, keys, node))


def relayed(n: int, name: str, records: list[tuple[int, str]], eoe: bool = True,
            node: str | None = None) -> None:
    """records: (type number, body) as the kernel writes them. eoe=False: the kernel sends
    none (no syscall context); audit_source completes such an event on its timeout."""
    CASES.append(Case(n, name, "relayed", (records, eoe), node=node))


# -- kill: every signal syscall, identities, targets, keys
ebpf(1, "kill/kill-TERM-root-no-login-no-tty", kill.to_audit,
     syscall("kill", (2453, 15, 0, 0x7F334EBB6AC0), 0, ROOT, targets=[SLEEP]))
ebpf(2, "kill/kill-USR2-unknown-user-pts0-one-key", kill.to_audit,
     syscall("kill", (3101, 12, 0x3101, 0), 0, replace(ALICE, comm=b"kill",
             exe=b"/usr/bin/kill", proctitle=b"kill\0-USR2\x003101"),
             targets=[target(3101, b"sleep", NOBODY_KNOWS, NOBODY_KNOWS, 3)]), keys=("sigs",))
ebpf(3, "kill/kill-sig0-probe-no-target-ttyS0", kill.to_audit,
     syscall("kill", (1, 0, 0, 0), 0, CONSOLE))
ebpf(4, "kill/kill-EPERM-target-named-by-lookup", kill.to_audit,
     syscall("kill", (1, 9, 0, 0), -1, NOBODY, targets=[target(1, b"systemd", auid=UNSET)]),
     keys=("sigs", "perm"))
ebpf(5, "kill/kill-ESRCH-no-target", kill.to_audit,
     syscall("kill", (99999, 15, 0, 0), -3, ALICE))
ebpf(6, "kill/kill-group-0-two-targets-daemon", kill.to_audit,
     syscall("kill", (0, 1, 0, 0), 0, DAEMON,
             targets=[target(880, b"svc", 1), target(881, b"svc-child", 1)]))
ebpf(7, "kill/kill-minus1-broadcast-8-kept-5-dropped", kill.to_audit,
     syscall("kill", (-1, 15, 0, 0), 0, ROOT, targets=ODD_TARGETS, dropped=5))
ebpf(8, "kill/tkill-SEGV-comm-with-space", kill.to_audit,
     syscall("tkill", (3105, 11, 0, 0), 0, replace(ALICE, comm=b"my prog"),
             targets=[target(3105, b"my prog", NOBODY_KNOWS, NOBODY_KNOWS, 3)]))
ebpf(9, "kill/tgkill-8-targets-odd-comms", kill.to_audit,
     syscall("tgkill", (4001, 4001, 10, 0), 0, ALICE, targets=ODD_TARGETS), keys=("sigs",))
ebpf(10, "kill/rt_sigqueueinfo-RTMIN+3-comm-with-quote", kill.to_audit,
     syscall("rt_sigqueueinfo", (4010, 37, 0x7FFC0000A000, 0), 0,
             replace(ALICE, comm=b'a"b'), targets=[target(4010, b"listener")]))
ebpf(11, "kill/rt_tgsigqueueinfo-sig64-non-utf8-comm", kill.to_audit,
     syscall("rt_tgsigqueueinfo", (4011, 4012, 64, 0x7FFC0000B000), 0,
             replace(ROOT, comm=b"\xff\xfe\xfd"), targets=[target(4011, b"rt")]))
ebpf(12, "kill/pidfd_send_signal-KILL-control-bytes-comm", kill.to_audit,
     syscall("pidfd_send_signal", (5, 9, 0, 0), 0, replace(CONSOLE, comm=b"ctl\x01\x7f"),
             targets=[target(4013, b"hung")]))
ebpf(13, "kill/pidfd_send_signal-EPERM-no-target-empty-comm", kill.to_audit,
     syscall("pidfd_send_signal", (7, 15, 0, 0), -1, replace(NOBODY, comm=b"", proctitle=b"")))
ebpf(14, "kill/kill-exe-none-proctitle-empty-falls-back-to-comm", kill.to_audit,
     syscall("kill", (4014, 15, 0, 0), 0, replace(ROOT, exe=None, proctitle=b""),
             targets=[SLEEP]))
ebpf(15, "kill/kill-odd-exe-bytes-long-proctitle", kill.to_audit,
     syscall("kill", (4015, 2, 0, 0), 0,
             replace(ROOT, exe=b"/opt/my app/b\xffin \"x\"", proctitle=LONG_TITLE),
             targets=[SLEEP]))
ebpf(16, "kill/kill-long-exe-path-three-keys", kill.to_audit,
     syscall("kill", (4016, 1, 0, 0), 0, replace(DAEMON, exe=LONG_EXE), targets=[SLEEP]),
     keys=("sigs", "hup", "audit-2026"))
ebpf(17, "kill/kill-keys-with-space-and-non-ascii", kill.to_audit,
     syscall("kill", (4017, 3, 0, 0), 0, SETUID, targets=[SLEEP]), keys=("my key", "clé"))
ebpf(18, "kill/kill-i386-arch-node-name", kill.to_audit,
     syscall("i386:kill", (4018, 10, 0, 0), 0, replace(ALICE, comm=b"kill32"), arch=I386,
             targets=[SLEEP]), node="web-01")
ebpf(19, "kill/kill-unknown-signal-99-ERESTARTSYS", kill.to_audit,
     syscall("kill", (4019, 99, 0, 0), -512, NOBODY))

# -- signals the kernel generated (no syscall): USER records
ebpf(20, "ksignal/SEGV-crash-same-victim", kill.to_audit,
     ksignal(11, 1, 0, replace(ALICE, pid=5001, comm=b"a.out", exe=b"/tmp/a.out",
                               proctitle=b"./a.out"),
             target(5001, b"a.out", NOBODY_KNOWS, NOBODY_KNOWS, 3)))
ebpf(21, "ksignal/PIPE-ignored-same-victim-key", kill.to_audit,
     ksignal(13, 0, 1, replace(DAEMON, pid=5002, comm=b"writer"), target(5002, b"writer", 1)),
     keys=("pipes",))
ebpf(22, "ksignal/OOM-KILL-other-victim-odd-comm-group", kill.to_audit,
     ksignal(9, 128, 0, NOBODY, target(5003, b"java \"big\"", 65534, 0, 9), group=True),
     keys=("oom", "kills"))
ebpf(23, "ksignal/tty-INT-from-kworker-exe-none", kill.to_audit,
     ksignal(2, 128, 0, who(77, b"kworker/u4:2", ppid=2, exe=None, proctitle=b""),
             target(3300, b"vim", NOBODY_KNOWS, NOBODY_KNOWS, 3)), node="web-01")
ebpf(24, "ksignal/ALRM-already-pending-RT-signal", kill.to_audit,
     ksignal(35, -2, 2, replace(CONSOLE, pid=5004, comm=b"timerd"), target(5004, b"timerd")))

# -- bind: SOCKADDR, holders (OBJ_PID + USER events), diagnosis from the case data
EPHEMERAL = HeldSocket(proto="tcp", family=socket.AF_INET, state="ESTABLISHED",
                       laddr="127.0.0.1", lport=48616, raddr="127.0.0.1", rport=443,
                       inode=93122, uid=NOBODY_KNOWS, how="sock_diag",
                       owners=[Proc(5151, b"curl", b"curl\0https://10.1.1.1/", NOBODY_KNOWS,
                                    NOBODY_KNOWS, 3)])
LISTENER6 = HeldSocket(proto="tcp", family=socket.AF_INET6, state="LISTEN", laddr="::",
                       lport=8080, raddr="::", rport=0, inode=777, uid=0, how="sock_diag",
                       owners=[Proc(900, b"nginx", b"nginx: master process /usr/sbin/nginx",
                                    0, UNSET, UNSET),
                               Proc(901, b"nginx", b"", 65534, UNSET, UNSET)])
TIME_WAIT6 = HeldSocket(proto="tcp", family=socket.AF_INET6, state="TIME_WAIT", laddr="::1",
                        lport=8080, raddr="::1", rport=51000, inode=0, uid=0, how="sock_diag")
KPROBE_OWNER = HeldSocket(proto="tcp", family=socket.AF_INET, state="LISTEN",
                          laddr="0.0.0.0", lport=5432, raddr="0.0.0.0", rport=0, inode=4455,
                          uid=1, how="kprobe", reuse=1, reuseport=0,
                          owners=[Proc(812, b"postgres",
                                       b"/usr/lib/postgresql/15/bin/postgres\0-D\0"
                                       b"/var/lib/postgresql/15/main", 1, UNSET, UNSET)])
UDP_HOLDER = HeldSocket(proto="udp", family=socket.AF_INET, state="UNCONNECTED",
                        laddr="0.0.0.0", lport=5353, raddr="0.0.0.0", rport=0, inode=31337,
                        uid=65534, how="sock_diag",
                        owners=[Proc(1234, b"mdns \xffd", b"/usr/sbin/mdnsd\0"
                                     + b"--a-very-long-option-" * 10, 65534, NOBODY_KNOWS, 7)])

ebpf(30, "bind/EADDRINUSE-ephemeral-client-holder-sock_diag", bind.to_audit,
     syscall("bind", (3, 0x7FFD2C1E4A10, 16, 0), -98, DAEMON,
             detail=bind_detail(sin("127.0.0.1", 48616), socket.AF_INET, 48616,
                                diagnosis=Diagnosis(48616, NETNS, None, [EPHEMERAL],
                                                    (32768, 60999), ""))),
     keys=("binds",))
ebpf(31, "bind/EADDRINUSE-v6-listener-2-procs-one-no-cmdline-plus-time-wait", bind.to_audit,
     syscall("bind", (4, 0x7FFD2C1E4B00, 28, 0), -98, CONSOLE,
             detail=bind_detail(sin6("::1", 8080), socket.AF_INET6, 8080,
                                diagnosis=Diagnosis(8080, NETNS, "blue",
                                                    [LISTENER6, TIME_WAIT6],
                                                    (32768, 60999), "9000-9010"))))
ebpf(32, "bind/EADDRINUSE-kprobe-decision-reuse-flags", bind.to_audit,
     syscall("bind", (5, 0x7FFD2C1E4C00, 16, 0), -98, NOBODY,
             detail=bind_detail(sin("0.0.0.0", 5432), socket.AF_INET, 5432,
                                conflict=Conflict("inet_csk_bind_conflict", 1, 5432,
                                                  KPROBE_OWNER),
                                diagnosis=Diagnosis(5432, NETNS, None, [], (32768, 60999),
                                                    ""))),
     keys=("binds", "db"))
ebpf(33, "bind/EADDRINUSE-udp-holder-odd-comm-long-cmdline-no-range", bind.to_audit,
     syscall("bind", (6, 0x7FFD2C1E4D00, 16, 0), -98, ALICE,
             detail=bind_detail(sin("0.0.0.0", 5353), socket.AF_INET, 5353,
                                diagnosis=Diagnosis(5353, NETNS, None, [UDP_HOLDER], None,
                                                    None))))
ebpf(34, "bind/EADDRINUSE-netns-gone-no-holder", bind.to_audit,
     syscall("bind", (3, 0x7FFD2C1E4E00, 16, 0), -98, DAEMON,
             detail=bind_detail(sin("10.0.0.1", 80), socket.AF_INET, 80,
                                diagnosis=Diagnosis(80, NETNS, None, [], None, None,
                                                    error="network namespace 4026531840 "
                                                    "is gone (no process left in it)"))))
ebpf(35, "bind/ok-0.0.0.0-80-root-console", bind.to_audit,
     syscall("bind", (3, 0x7FFD2C1E4F00, 16, 0), 0, CONSOLE,
             detail=bind_detail(sin("0.0.0.0", 80), socket.AF_INET, 80)))
ebpf(36, "bind/EACCES-port-80-unknown-user", bind.to_audit,
     syscall("bind", (3, 0x7FFD2C1E5000, 16, 0), -13, ALICE,
             detail=bind_detail(sin("0.0.0.0", 80), socket.AF_INET, 80)))
ebpf(37, "bind/EINVAL-addrlen-0-no-SOCKADDR", bind.to_audit,
     syscall("bind", (3, 0, 0, 0), -22, NOBODY, detail=bind_detail(None, 0, 0)))
ebpf(38, "bind/unix-path-ok", bind.to_audit,
     syscall("bind", (3, 0x7FFD2C1E5100, 16, 0), 0, DAEMON,
             detail=bind_detail(sun(b"/run/app.sock\0"), socket.AF_UNIX, 0)))
ebpf(39, "bind/unix-abstract-EADDRINUSE-no-lookup", bind.to_audit,
     syscall("bind", (3, 0x7FFD2C1E5200, 16, 0), -98, DAEMON,
             detail=bind_detail(sun(b"\0abstract-name"), socket.AF_UNIX, 0)))

# -- net: connect/accept with SOCKADDR of every family the interpreters know
ebpf(40, "net/connect-inet-ssh-ok", net.to_audit,
     syscall("connect", (3, 0x7FFE00001000, 16, 0), 0, ALICE,
             detail=NetDetail(sin("10.0.0.5", 22), 16, 22)))
ebpf(41, "net/connect-ECONNREFUSED-inet6", net.to_audit,
     syscall("connect", (4, 0x7FFE00001100, 28, 0), -111, NOBODY,
             detail=NetDetail(sin6("2001:db8::5", 5432), 28, 5432)), keys=("net",))
ebpf(42, "net/connect-EINPROGRESS-nonblocking", net.to_audit,
     syscall("connect", (5, 0x7FFE00001200, 16, 0), -115, DAEMON,
             detail=NetDetail(sin("192.0.2.10", 443), 16, 443)))
ebpf(43, "net/accept4-peer-inet", net.to_audit,
     syscall("accept4", (3, 0x7FFE00001300, 0x7FFE00001310, 0x80800), 7, DAEMON,
             detail=NetDetail(sin("198.51.100.7", 51515), 16, 51515)))
ebpf(44, "net/accept-null-buffer-no-SOCKADDR", net.to_audit,
     syscall("accept", (3, 0, 0, 0), 8, DAEMON, detail=NetDetail(None, 0, 0)))
ebpf(45, "net/connect-unix-path", net.to_audit,
     syscall("connect", (6, 0x7FFE00001400, 110, 0), 0, CONSOLE,
             detail=NetDetail(sun(b"/run/dbus/system_bus_socket\0"), 110, 0)))
ebpf(46, "net/connect-unix-abstract-ENOENT", net.to_audit,
     syscall("connect", (6, 0x7FFE00001500, 19, 0), -2, CONSOLE,
             detail=NetDetail(sun(b"\0/tmp/.X11-unix/X0"), 19, 0)))
ebpf(47, "net/connect-short-inet-sockaddr", net.to_audit,
     syscall("connect", (3, 0x7FFE00001600, 8, 0), -22, ALICE,
             detail=NetDetail(sin("10.0.0.5", 22)[:8], 8, 22)))
ebpf(48, "net/connect-netlink", net.to_audit,
     syscall("connect", (3, 0x7FFE00001700, 12, 0), 0, ROOT,
             detail=NetDetail(struct.pack("=HHII", 16, 0, 0, 0), 12, 0)))

# -- ioctl: PATH of the file behind the fd, requests named or _IOC()
RTC0 = FileInfo(path=b"/dev/rtc0", ino=12, dev=dev(0, 5), rdev=dev(252, 0), mode=0o20664,
                uid=0, gid=0)
ebpf(50, "ioctl/RTC_RD_TIME-on-rtc0-char-device", ioctl.to_audit,
     syscall("ioctl", (3, 0x80247009, 0x7FFC00002000, 0), 0, CONSOLE, detail=RTC0))
ebpf(51, "ioctl/TCGETS-ENOTTY-on-regular-file", ioctl.to_audit,
     syscall("ioctl", (1, 0x5401, 0x7FFC00002100, 0), -25, NOBODY,
             detail=FileInfo(path=b"/var/log/worker log.txt", ino=131077, dev=dev(254, 1),
                             rdev=0, mode=0o100640, uid=65534, gid=65534)))
ebpf(52, "ioctl/FIONREAD-on-socket-no-path", ioctl.to_audit,
     syscall("ioctl", (4, 0x541B, 0x7FFC00002200, 0), 0, DAEMON,
             detail=FileInfo(path=None, ino=93150, dev=dev(0, 8), rdev=0, mode=0o140777,
                             uid=1, gid=1)), keys=("ioctl",))
ebpf(53, "ioctl/unknown-request-truncated-deep-path-unknown-owner", ioctl.to_audit,
     syscall("ioctl", (9, 0xC0107A01, 0x7FFC00002300, 0), -22, ALICE,
             detail=FileInfo(path=b"/d12/d13/d14/d15/d16/dev-\xff", ino=4, dev=dev(0, 6),
                             rdev=dev(10, 200), mode=0o20600, uid=NOBODY_KNOWS,
                             gid=NOBODY_KNOWS, truncated=True)))
ebpf(54, "ioctl/EBADF-no-file", ioctl.to_audit,
     syscall("ioctl", (99, 0x5413, 0x7FFC00002400, 0), -9, ALICE, detail=None))

# -- clock: TIME_INJOFFSET, KERNEL_OTHER old/new/asked/offset/modes/rtc
NS = 1_000_000_000
ebpf(60, "clock/clock_settime-REALTIME-forward-injoffset", clock.to_audit,
     syscall("clock_settime", (0, 0x7FFC00003000, 0, 0), 0, CONSOLE,
             detail=ClockDetail(before_ns=(T0 + 60) * NS + 1_000, after_ns=(T0 + 3660) * NS + 5,
                                asked=ASKED_TIME, asked_ns=(T0 + 3660) * NS, modes=0, rtc=None)),
     keys=("time-change",))
ebpf(61, "clock/settimeofday-EPERM-no-injoffset", clock.to_audit,
     syscall("settimeofday", (0x7FFC00003100, 0, 0, 0), -1, ALICE,
             detail=ClockDetail(before_ns=(T0 + 61) * NS, after_ns=(T0 + 61) * NS + 20_000,
                                asked=ASKED_TIME, asked_ns=T0 * NS, modes=0, rtc=None)))
ebpf(62, "clock/adjtimex-SETOFFSET-negative-half-second", clock.to_audit,
     syscall("adjtimex", (0x7FFC00003200, 0, 0, 0), 0, ROOT,
             detail=ClockDetail(before_ns=(T0 + 62) * NS, after_ns=(T0 + 61) * NS + NS // 2,
                                asked=ASKED_OFFSET, asked_ns=-NS // 2, modes=0x2100,
                                rtc=None)))
ebpf(63, "clock/clock_adjtime-TAI-frequency-only", clock.to_audit,
     syscall("clock_adjtime", (11, 0x7FFC00003300, 0, 0), 0, ROOT,
             detail=ClockDetail(before_ns=(T0 + 63) * NS, after_ns=(T0 + 63) * NS + 3_000,
                                asked=0, asked_ns=0, modes=0x2, rtc=None)))
ebpf(64, "clock/RTC_SET_TIME-ioctl-rtc-field", clock.to_audit,
     syscall("ioctl", (3, 0x4024700A, 0x7FFC00003400, 0), 0, CONSOLE,
             detail=ClockDetail(before_ns=(T0 + 64) * NS, after_ns=(T0 + 64) * NS + 90_000,
                                asked=0, asked_ns=0, modes=0,
                                rtc=(15, 39, 3, 22, 10, 126, 0, 0, 0))))
ebpf(65, "clock/clock_settime-to-the-entry-time-no-injoffset", clock.to_audit,
     syscall("clock_settime", (0, 0x7FFC00003500, 0, 0), 0, CONSOLE,
             detail=ClockDetail(before_ns=(T0 + 65) * NS, after_ns=(T0 + 65) * NS + 7,
                                asked=ASKED_TIME, asked_ns=(T0 + 65) * NS, modes=0,
                                rtc=None)))

# -- exec: EXECVE (quoted, hex, split), CWD, PATH
LS = FileInfo(path=b"/usr/bin/ls", ino=1835, dev=dev(254, 1), rdev=0, mode=0o100755, uid=0,
              gid=0)
ebpf(70, "exec/execve-ls-two-keys", exec_.to_audit,
     syscall("execve", (0x55D0C4A3E2A0, 0x55D0C4A3E2F0, 0x55D0C4A3E320, 8), 0,
             replace(ALICE, comm=b"ls", exe=b"/usr/bin/ls", proctitle=b"ls\0-l\0/tmp"),
             detail=ExecDetail(filename=b"/usr/bin/ls", cwd=b"/home/alice", file=LS,
                               argv=[b"ls", b"-l", b"/tmp"], argc=3, argv_truncated=False)),
     keys=("exec", "ls"))
ebpf(71, "exec/execve-odd-args-space-quote-non-utf8-empty-odd-cwd", exec_.to_audit,
     syscall("execve", (0x55D0C4A3E400, 0x55D0C4A3E450, 0x55D0C4A3E480, 0), 0,
             replace(NOBODY, comm=b"echo", exe=b"/usr/bin/echo",
                     proctitle=b'echo\0a b\0q"\0\xff\xfe\0'),
             detail=ExecDetail(filename=b"echo", cwd=b"/srv/work dir/\xe9t\xe9",
                               file=replace(LS, path=b"/usr/bin/echo", ino=1900),
                               argv=[b"echo", b"a b", b'q"', b"\xff\xfe", b""], argc=5,
                               argv_truncated=False)))
ebpf(72, "exec/execve-9000-byte-argument-split-records", exec_.to_audit,
     syscall("execve", (0x55D0C4A3E500, 0x55D0C4A3E550, 0x55D0C4A3E580, 0), 0,
             replace(ROOT, comm=b"printf", exe=b"/usr/bin/printf",
                     proctitle=(b"printf\0%s\0" + b"z" * 9000)[:128]),
             detail=ExecDetail(filename=b"/usr/bin/printf", cwd=b"/",
                               file=replace(LS, path=b"/usr/bin/printf", ino=1901),
                               argv=[b"printf", b"%s", b"z" * 9000], argc=3,
                               argv_truncated=False)))
ebpf(73, "exec/execve-argv-truncated-argc-from-stack", exec_.to_audit,
     syscall("execve", (0x55D0C4A3E600, 0x55D0C4A3E650, 0x55D0C4A3E680, 0), 0,
             replace(DAEMON, comm=b"xargs", exe=b"/usr/bin/xargs", proctitle=b"xargs"),
             detail=ExecDetail(filename=b"/usr/bin/xargs", cwd=b"/var/lib/svc",
                               file=replace(LS, path=b"/usr/bin/xargs", ino=1902),
                               argv=[b"xargs", b"-0"], argc=40000, argv_truncated=True)))
ebpf(74, "exec/execve-ENOENT-PATH-UNKNOWN-no-inode", exec_.to_audit,
     syscall("execve", (0x55D0C4A3E700, 0x55D0C4A3E750, 0x55D0C4A3E780, 0), -2, ALICE,
             detail=ExecDetail(filename=b"./no-such-tool", cwd=b"/home/alice", file=None,
                               argv=[], argc=0, argv_truncated=False)))
ebpf(75, "exec/execve-EACCES-PATH-NORMAL-no-inode", exec_.to_audit,
     syscall("execve", (0x55D0C4A3E800, 0x55D0C4A3E850, 0x55D0C4A3E880, 0), -13, NOBODY,
             detail=ExecDetail(filename=b"/root/secret.sh", cwd=b"/tmp", file=None, argv=[],
                               argc=0, argv_truncated=False)))
ebpf(76, "exec/execveat-setuid-passwd-euid-0", exec_.to_audit,
     syscall("execveat", (3, 0x55D0C4A3E900, 0x55D0C4A3E950, 0x55D0C4A3E980), 0, SETUID,
             detail=ExecDetail(filename=b"", cwd=b"/home/alice",
                               file=FileInfo(path=b"/usr/bin/passwd", ino=2050,
                                             dev=dev(254, 1), rdev=0, mode=0o104755, uid=0,
                                             gid=0),
                               argv=[b"passwd"], argc=1, argv_truncated=False)),
     keys=("privileged",), node="web-01")

# -- exit: exit/exit_group without success/exit, deaths by signal as ANOM_ABEND
ebpf(80, "exit/exit_group-0", exit_.to_audit,
     syscall("exit_group", (0, 0, 0, 0), 0, replace(ALICE, comm=b"true", exe=b"/usr/bin/true",
                                                    proctitle=b"true"),
             detail=ExitDetail(status=0)))
ebpf(81, "exit/exit-thread-code-1-key", exit_.to_audit,
     syscall("exit", (1, 0, 0, 0), 0, DAEMON, detail=ExitDetail(status=1 << 8)),
     keys=("exits",))
ebpf(82, "exit/ANOM_ABEND-TERM-by-kill", exit_.to_audit,
     syscall("task-exit", (0, 0, 0, 0), 0, replace(ROOT, pid=2453, comm=b"sleep",
                                              exe=b"/usr/bin/sleep", proctitle=b"sleep\x00100"),
             detail=ExitDetail(status=15, killer_pid=2454, killer_comm=b"kill")))
ebpf(83, "exit/ANOM_ABEND-SEGV-core-no-sender-keys", exit_.to_audit,
     syscall("task-exit", (0, 0, 0, 0), 0, replace(ALICE, pid=5001, comm=b"a.out",
                                              exe=b"/tmp/a.out"),
             detail=ExitDetail(status=0x8B)), keys=("crash", "abend"))
ebpf(84, "exit/ANOM_ABEND-KILL-odd-sender-comm-exe-none", exit_.to_audit,
     syscall("task-exit", (0, 0, 0, 0), 0,
             replace(NOBODY, pid=5003, comm=b"java \"big\"", exe=None),
             detail=ExitDetail(status=9, killer_pid=77, killer_comm=b"oom \xffreaper")))

# -- rules and trace: key of the deciding rule, success by IS_ERR_VALUE, no result on exit
A64 = ("arch", "=", X86_64)
RULES = [
    R.Rule("exit", "always", (NR["openat"],),
           (A64, ("success", "=", 0), ("key", "=", "open-fail"))),
    R.Rule("exit", "always", (NR["exit_group"],), (A64, ("key", "=", "exits"))),
    R.Rule("exit", "always", (NR["read"], NR["lseek"], NR["wait4"]),
           (A64, ("key", "=", R.KEY_SEP.join(["io", "wait"])))),
]
PLAN = rule_filter.plan(RULES, host=X86_64)
# `audtrace trace` makes its plan from one keyless rule (trace.trace_rule, trace.subcommand)
TRACE_PLAN = rule_filter.plan([R.Rule("exit", "always", (NR["read"], NR["execve"]), (A64,))],
                              host=X86_64)
ebpf(90, "rules/openat-EACCES-key-open-fail", rules.records_for(PLAN),
     syscall("openat", (0xFFFFFF9C, 0x7FFC00004000, 0, 0), -13, ALICE,
             detail=rules.RuleDetail(1, True)))
ebpf(91, "rules/exit_group-no-result", rules.records_for(PLAN),
     syscall("exit_group", (3, 0, 0, 0), 0, DAEMON, detail=rules.RuleDetail(2, False)))
ebpf(92, "rules/wait4-ERESTARTSYS-two-keys", rules.records_for(PLAN),
     syscall("wait4", (0xFFFFFFFFFFFFFFFF, 0x7FFC00004100, 0, 0), -512, CONSOLE,
             detail=rules.RuleDetail(3, True)))
# lseek on /proc/PID/mem to a kernel address: the offset is the result, negative as a long
ebpf(93, "rules/lseek-kernel-address-negative-ret-is-success", rules.records_for(PLAN),
     syscall("lseek", (3, 0xFFFFFFFF81000000, 0, 0), 0xFFFFFFFF81000000 - (1 << 64), ROOT,
             detail=rules.RuleDetail(3, True)))
# a kernel address far below: the result does not fit in 32 bits (ausearch cuts it so)
ebpf(96, "rules/lseek-result-below-int-range", rules.records_for(PLAN),
     syscall("lseek", (3, 0xFFFF888000000000, 0, 0), 0xFFFF888000000000 - (1 << 64), ROOT,
             detail=rules.RuleDetail(3, True)))
ebpf(94, "trace/read-no-key", rules.records_for(TRACE_PLAN),
     syscall("read", (0, 0x7FFC00004200, 4096, 0), 4096, ALICE,
             detail=rules.RuleDetail(1, True)))
ebpf(95, "trace/read-EINTR", rules.records_for(TRACE_PLAN),
     syscall("read", (0, 0x7FFC00004300, 4096, 0), -4, ALICE,
             detail=rules.RuleDetail(1, True)))

# -- latency --slower-than: SYSCALL with latency_ns after key=
ebpf(100, "latency/slow-nanosleep-key", latency.to_audit,
     syscall("nanosleep", (0x7FFC00005000, 0, 0, 0), 0, NOBODY, detail=20_100_000),
     keys=("slow",))
# success as the kernel judges it (IS_ERR_VALUE), not by the sign
ebpf(103, "latency/slow-lseek-negative-result-is-success", latency.to_audit,
     syscall("lseek", (3, 0xFFFFFFFF81000000, 0, 0), 0xFFFFFFFF81000000 - (1 << 64), ROOT,
             detail=1_500_000))
ebpf(101, "latency/slow-exit_group-no-result", latency.to_audit,
     syscall("exit_group", (0, 0, 0, 0), 0, ALICE, detail=1_500_000_000))
ebpf(102, "latency/slow-bind-EADDRINUSE-no-latency-value", latency.to_audit,
     syscall("bind", (3, 0x7FFC00005100, 16, 0), -98, DAEMON, detail=None))

# -- relayed from kernel audit, verbatim
relayed(110, "audit/kill-SYSCALL-OBJ_PID-PROCTITLE-node", [
    (1300, 'arch=c000003e syscall=62 success=yes exit=0 a0=995 a1=f a2=0 a3=7f334ebb6ac0 '
           'items=0 ppid=3099 pid=3102 auid=4242 uid=4242 gid=4242 euid=4242 suid=4242 '
           'fsuid=4242 egid=4242 sgid=4242 fsgid=4242 tty=pts0 ses=3 comm="kill" '
           'exe="/usr/bin/kill" key="sigs"'),
    (1318, 'opid=2453 oauid=4242 ouid=4242 oses=3 ocomm="sleep"'),
    (1327, "proctitle=6B696C6C002D31350032343533"),
], node="web-01")
relayed(111, "audit/bind-EADDRINUSE-SOCKADDR", [
    (1300, 'arch=c000003e syscall=49 success=no exit=-98 a0=3 a1=7ffd2c1e4a10 a2=10 a3=0 '
           'items=0 ppid=1 pid=880 auid=4294967295 uid=1 gid=1 euid=1 suid=1 fsuid=1 egid=1 '
           'sgid=1 fsgid=1 tty=(none) ses=4294967295 comm="svc" exe="/usr/sbin/svc" '
           'key=(null)'),
    (1306, "saddr=0200BDE87F0000010000000000000000"),
    (1327, 'proctitle="/usr/sbin/svc"'),
])
relayed(112, "audit/execve-EXECVE-CWD-2-PATH", [
    (1300, 'arch=c000003e syscall=59 success=yes exit=0 a0=55d0c4a3e2a0 a1=55d0c4a3e2f0 '
           'a2=55d0c4a3e320 a3=8 items=2 ppid=690 pid=2471 auid=0 uid=0 gid=0 euid=0 suid=0 '
           'fsuid=0 egid=0 sgid=0 fsgid=0 tty=ttyS0 ses=1 comm="ls" exe="/usr/bin/ls" '
           'key="exec"'),
    (1309, 'argc=3 a0="ls" a1="-l" a2=2F746D702F612062'),
    (1307, 'cwd="/root"'),
    (1302, 'item=0 name="/usr/bin/ls" inode=1835 dev=fe:01 mode=0100755 ouid=0 ogid=0 '
           'rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0'),
    (1302, 'item=1 name="/lib64/ld-linux-x86-64.so.2" inode=2001 dev=fe:01 mode=0100755 '
           'ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 '
           'cap_frootid=0'),
    (1327, "proctitle=6C73002D6C002F746D702F612062"),
])
relayed(113, "audit/CONFIG_CHANGE-add_rule-with-its-sendto", [
    (1305, 'auid=0 ses=1 op=add_rule key="sigs" list=4 res=1'),
    (1300, 'arch=c000003e syscall=44 success=yes exit=1084 a0=4 a1=7ffe1d3c2a50 a2=43c a3=0 '
           'items=0 ppid=700 pid=2480 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 '
           'sgid=0 fsgid=0 tty=ttyS0 ses=1 comm="auditctl" exe="/usr/sbin/auditctl" '
           'key=(null)'),
    (1306, "saddr=100000000000000000000000"),
    (1327, "proctitle=617564697463746C002D61006578697400616C77617973002D53006B696C6C"),
])
relayed(114, "audit/CONFIG_CHANGE-audit_enabled-no-context-no-EOE", [
    (1305, "op=set audit_enabled=1 old=0 auid=4294967295 ses=4294967295 res=1"),
], eoe=False)
relayed(115, "audit/USER_CMD-sudo-from-unknown-user", [
    (1123, "pid=3110 uid=4242 auid=4242 ses=3 msg='cwd=\"/home/alice\" "
           "cmd=73797374656D63746C2072657374617274206E67696E78 exe=\"/usr/bin/sudo\" "
           "terminal=pts/0 res=success'\n\0"),
], eoe=False)
relayed(116, "audit/USER_LOGIN-failed-hex-acct", [
    (1112, "pid=5000 uid=0 auid=4294967295 ses=4294967295 msg='op=login "
           "acct=28696E76616C6964207573657229 exe=\"/usr/sbin/sshd\" hostname=? "
           "addr=192.0.2.7 terminal=ssh res=failed'"),
], eoe=False)
relayed(117, "audit/ANOM_ABEND-core-dump-no-EOE", [
    (1701, 'auid=4242 uid=4242 gid=4242 ses=3 pid=5001 comm="a.out" exe="/tmp/a.out" sig=11 '
           'res=1'),
], eoe=False)
relayed(118, "audit/kill-i386-compat-task", [
    (1300, 'arch=40000003 syscall=37 success=yes exit=0 a0=1f45 a1=a a2=0 a3=0 items=0 '
           'ppid=3100 pid=3120 auid=4242 uid=4242 gid=4242 euid=4242 suid=4242 fsuid=4242 '
           'egid=4242 sgid=4242 fsgid=4242 tty=pts0 ses=3 comm="kill32" '
           'exe="/opt/i386/kill32" key="sigs"'),
    (1318, 'opid=8005 oauid=4242 ouid=4242 oses=3 ocomm="sleep"'),
    (1327, "proctitle=6B696C6C3332002D3130003830303500"),
])
relayed(119, "audit/watch-unlinkat-PARENT-DELETE", [
    (1300, 'arch=c000003e syscall=263 success=yes exit=0 a0=ffffff9c a1=55f2b1a8c4e0 a2=0 '
           'a3=0 items=2 ppid=700 pid=2490 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 '
           'sgid=0 fsgid=0 tty=ttyS0 ses=1 comm="rm" exe="/usr/bin/rm" key="shadow-watch"'),
    (1307, 'cwd="/etc"'),
    (1302, 'item=0 name="/etc/" inode=2 dev=fe:01 mode=040755 ouid=0 ogid=0 rdev=00:00 '
           'nametype=PARENT cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0'),
    (1302, 'item=1 name="shadow-" inode=1422 dev=fe:01 mode=0100640 ouid=0 ogid=42 '
           'rdev=00:00 nametype=DELETE cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0'),
    (1327, "proctitle=726D002F6574632F736861646F772D"),
])
relayed(120, "audit/clock_settime-TIME_INJOFFSET", [
    (1300, 'arch=c000003e syscall=227 success=yes exit=0 a0=0 a1=7ffc4a1b2c30 a2=0 a3=0 '
           'items=0 ppid=700 pid=2500 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 '
           'sgid=0 fsgid=0 tty=ttyS0 ses=1 comm="date" exe="/usr/bin/date" '
           'key="time-change"'),
    (1332, "sec=-1 nsec=999998123"),
    (1327, "proctitle=64617465002D73002B31"),
])
relayed(121, "audit/AVC-and-SYSCALL-with-mls-label-commas", [
    (1400, 'avc:  denied  { read } for  pid=3130 comm="cat" name="shadow" dev="dm-0" '
           'ino=1421 scontext=user_u:user_r:user_t:s0:c1,c5 '
           'tcontext=system_u:object_r:shadow_t:s0 tclass=file permissive=0'),
    (1300, 'arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=7ffd5b0c1e2f a2=0 '
           'a3=0 items=1 ppid=3100 pid=3130 auid=4242 uid=4242 gid=4242 euid=4242 '
           'suid=4242 fsuid=4242 egid=4242 sgid=4242 fsgid=4242 tty=pts0 ses=3 comm="cat" '
           'exe="/usr/bin/cat" subj=user_u:user_r:user_t:s0:c1,c5 key=(null)'),
    (1307, 'cwd="/home/alice"'),
    (1302, 'item=0 name="/etc/shadow" inode=1421 dev=fe:01 mode=0100640 ouid=0 ogid=42 '
           'rdev=00:00 obj=system_u:object_r:shadow_t:s0 nametype=NORMAL cap_fp=0 cap_fi=0 '
           'cap_fe=0 cap_fver=0 cap_frootid=0'),
    (1327, "proctitle=636174002F6574632F736861646F77"),
])
relayed(122, "audit/type-unknown-to-libaudit-1338", [
    (1300, 'arch=c000003e syscall=16 success=yes exit=0 a0=3 a1=c138fd09 a2=55e0c2f1a2b0 '
           'a3=0 items=0 ppid=700 pid=2510 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 '
           'sgid=0 fsgid=0 tty=ttyS0 ses=1 comm="dmsetup" exe="/usr/sbin/dmsetup" '
           'key=(null)'),
    (1338, "module=integrity op=ctr ppid=700 pid=2510 auid=0 uid=0 gid=0 euid=0 suid=0 "
           "fsuid=0 egid=0 sgid=0 fsgid=0 tty=ttyS0 ses=1 comm=\"dmsetup\" "
           "exe=\"/usr/sbin/dmsetup\" dev=254:3 error_msg='success' res=1"),
    (1327, "proctitle=646D7365747570006372656174650074657374"),
])

# -- the session's own loss record
CASES.append(Case(130, "session/DAEMON_ERR-lost-events-ebpf-and-audit", "loss",
                  {"lost": {"ebpf": 7, "audit": 12}, "reported": {"ebpf": 0, "audit": 9}}))


# ---- building ------------------------------------------------------------------------------

@contextmanager
def _bind_lookups(diagnosis: Diagnosis | None) -> Iterator[None]:
    """bind.to_audit without the system: the case's Diagnosis instead of a sock_diag lookup,
    owners as the case gives them, no stderr summary."""
    with mock.patch.object(bind_holders, "diagnose", lambda *_a: diagnosis), \
            mock.patch.object(bind_holders, "attach_owners", lambda _holders: None), \
            mock.patch.object(bind_report, "explain", lambda *_a: None):
        yield


def _ebpf_events(case: Case) -> list[Event]:
    ev = copy.deepcopy(case.data)           # to_audit may fill in the event (bind does)
    ev.time_ns = stamp_ns(case.n)
    if case.to_audit is bind.to_audit:
        with _bind_lookups(ev.detail.diagnosis):
            out = case.to_audit(ev, list(case.keys), 0)
    else:
        out = case.to_audit(ev, list(case.keys), 0)
    events = out if isinstance(out, list) else [out]
    assert len(events) < 10, f"{case.name}: serials allow 10 events per case"
    for k, e in enumerate(events):
        e.serial = EBPF_SERIAL | (10 * case.n + k)      # as the session does at write time
    return events


def netlink_messages(case: Case) -> list[tuple[int, str]]:
    """The case's records as the kernel multicasts them: `audit(S.MMM:N): body`."""
    records, eoe = case.data
    sec, rest = divmod(stamp_ns(case.n), NS)
    head = f"audit({sec}.{rest // 1_000_000:03d}:{KERNEL_SERIAL + case.n}):"
    out = [(t, f"{head} {body}") for t, body in records]
    return out + [(AUDIT_EOE, head)] if eoe else out


def _relayed_events(case: Case) -> list[Event]:
    """As tracer/audit/source.py turns multicast records into an Event."""
    ev = None
    for msg_type, text in netlink_messages(case):
        sec, msec, serial, body = parse_netlink(msg_type, text)
        if msg_type == AUDIT_EOE:
            break
        if ev is None:
            ev = Event(sec, msec, serial, [], source="audit")
        ev.records.append(Record(type=record_type_name(msg_type), fields=[], body=body))
    assert ev is not None
    return [ev]


def _loss_events(case: Case) -> list[Event]:
    """The session's loss records (audit_records.loss_event) for the case's counts: one per
    source with losses not yet reported, numbered in that order."""
    counts = case.data
    out: list[Event] = []
    for source, total in counts["lost"].items():
        new = total - counts["reported"][source]
        if new > 0:
            ev = audit_records.loss_event(source, new, total, stamp_ns(case.n))
            ev.serial = EBPF_SERIAL | (10 * case.n + len(out))
            out.append(ev)
    return out


def build_case(case: Case) -> list[Event]:
    """The Events of one case, fresh each call (formatting may cache parsed fields)."""
    if case.kind == "ebpf":
        events = _ebpf_events(case)
    elif case.kind == "relayed":
        events = _relayed_events(case)
    else:
        events = _loss_events(case)
    if case.node is not None:
        for e in events:
            e.node = case.node
    return events


def build() -> list[tuple[str, Event]]:
    """Every event of the corpus in order, each with its case's name (`name#k` for the
    k-th event of a case that makes several)."""
    assert len({c.n for c in CASES}) == len(CASES), "case numbers must be unique"
    out = []
    for case in CASES:
        events = build_case(case)
        for k, e in enumerate(events):
            out.append((case.name if len(events) == 1 else f"{case.name}#{k}", e))
    return out
