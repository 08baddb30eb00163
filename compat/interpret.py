"""What ``ausearch -i`` prints, and auditd's ENRICHED log format.

The interpretation follows ausearch/auparse 3.0.9 closely enough that
``format_interpreted(ev)`` equals ``ausearch -i`` byte for byte (under LC_ALL=C,
escape mode tty) for the record types audtrace writes. Where ausearch prints a
bare hex number or a wrong name, audtrace prints better; these are the known
differences (each is locked in by tests/integration/test_ausearch_format.py):

* signals: ausearch names a1 of kill/tkill, a2 of tgkill, a0 of rt_sigaction.
  audtrace also names a1 of rt_sigqueueinfo and pidfd_send_signal and a2 of
  rt_tgsigqueueinfo. Signal 30 is ``SIGPWR`` (ausearch has a typo, ``IGPWR``);
  real-time signals are ``SIGRTMIN+n``/``SIGRTMAX-n`` (ausearch:
  ``unknown-signal(0x22)``); 32 and 33 stay ``unknown-signal(...)``.
* exit codes of kernel-internal errnos (512 ERESTARTSYS ...) are named
  (ausearch prints ``(null)(Unknown error 512)``).
* ioctl requests (a1): ausearch's names where it has one (FIONREAD is its TIOCINQ);
  audtrace also names the requests of compat/ioctls.py and writes any other as
  ``_IOC(dir,'type',nr,size)``. Clock ids (a0 of clock_settime, and of clock_adjtime
  beyond ausearch) are named up to CLOCK_TAI (ausearch stops at 6).
* audtrace's own fields: ANOM_ABEND ``status=`` (how a process ended) reads
  ``killed(SIGTERM)``, ``killed(SIGABRT,core)`` or ``exited(3)``; KERNEL_OTHER
  ``old=``/``new=``/``asked=`` (wall times of `audtrace clock`) as local dates with
  nanoseconds; ``core=``/``by_comm=`` unquoted.
* not interpreted (printed as ausearch prints a plain value: ``0x..`` for a0..a3,
  the value itself otherwise): socket options, fcntl/prctl/ptrace/mmap/
  mount/clone/recv flags, personality, seccomp codes, rlimits,
  netfilter fields, tty data, protocol names (socket a2) and RHEL4 PATH flags.

The time stamp is written ``%x %T`` in the C locale (``11/22/26 02:30:24``),
as ausearch writes it when LC_ALL/LC_TIME/LANG are unset or C.
Strings are returned as ``str``; undecodable bytes are surrogate escapes, so a
sink must encode with ``errors="surrogateescape"`` to reproduce ausearch's bytes.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct
import time
from collections.abc import Iterator

from . import record as _rec
from .ints import s32
from .record import Event, Record, SyscallRecord
from .rules import KEY_SEP, LISTS
from .signals import SIGRTMAX, SIGRTMIN, signal_name
from .tables import ARCH_NAMES, errno_message, errno_name, file_types, host_arch, syscall_name

SEPARATOR = "\x1d"  # AUDIT_INTERP_SEPARATOR

# Record type numbers used by the field-type adjustments.
_T_SYSCALL, _T_PATH, _T_EXECVE, _T_SECCOMP = 1300, 1302, 1309, 1326
_T_AVC, _T_USER_TTY, _T_NETFILTER_PKT, _T_MQ_OPEN = 1400, 1124, 1324, 1312
_T_CRYPTO_KEY_USER, _T_TRUSTED_APP, _T_KERN_MODULE = 2404, 1121, 1334
_T_GROUP_ID = (1116, 1117, 1132)  # ADD_GROUP, DEL_GROUP, GRP_MGMT
_T_KERNEL_OTHER, _T_ANOM_ABEND = 1316, 1701

# Field name -> interpretation, as auparse's typetab.
_FIELD_TYPES: dict[str, str] = {}
for _kind, _names in {
    "uid": "auid uid euid suid fsuid ouid oauid old-auid iuid id inode_uid sauid obj_uid",
    "gid": "obj_gid gid egid sgid fsgid ogid igid inode_gid new_gid",
    "syscall": "syscall",
    "arch": "arch",
    "exit": "exit",
    "escaped": "path comm exe file name watch cwd cmd acct dir vm old-chardev new-chardev "
    "old-disk new-disk old-fs new-fs old-net new-net device cgroup old-rng new-rng ocomm "
    "grp new_group invalid_context sw root_dir",
    "key": "key",
    "perm": "perm perm_mask",
    "mode": "mode",
    "sockaddr": "saddr",
    "promisc": "prom old_prom",
    "capability": "capability",
    "success": "res result",
    "a0": "a0",
    "a1": "a1",
    "a2": "a2",
    "a3": "a3",
    "signal": "sig sigev_signo",
    "list": "list",
    "tty_data": "data",
    "session": "ses",
    "cap_bitmap": "cap_pi cap_pe cap_pp cap_pa cap_fi cap_fp fp fi old_pp old_pi old_pe "
    "old_pa new_pp new_pi new_pe pp pi pe pa",
    "oflag": "oflag",
    "mac_label": "subj obj scontext tcontext vm-ctx img-ctx",
    "proctitle": "proctitle",
    # auparse interprets these, audtrace prints them as they are (see module doc).
    "raw": "family icmptype proto addr per code flags hook action macproto ioctlcmd resp "
    "nl-mcgrp resolve",
}.items():
    for _name in _names.split():
        _FIELD_TYPES[_name] = _kind


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def field_type(rtype: int, name: str, value: str) -> str:
    """The interpretation auparse applies to field ``name`` of a record of type ``rtype``."""
    if rtype == _T_EXECVE and name.startswith("a") and name != "argc" and "_len" not in name:
        return "escaped"
    if rtype == _T_AVC and name == "saddr":
        return "unclassified"
    if rtype == _T_USER_TTY and name == "msg":
        return "escaped"
    if rtype == _T_NETFILTER_PKT and name == "saddr":
        return "raw"
    if name == "acct":
        return "escaped" if value.startswith('"') or _is_hex(value) else "unclassified"
    if rtype == _T_PATH and name == "flags":
        return "raw"
    if rtype == _T_MQ_OPEN and name == "mode":
        return "mode_short"
    if rtype == _T_CRYPTO_KEY_USER and name == "fp":
        return "unclassified"
    if name == "id" and rtype in _T_GROUP_ID:
        return "gid"
    if rtype == _T_TRUSTED_APP:
        if value.startswith('"'):
            return "escaped"
        if value.isdigit():
            return "unclassified"
        return "escaped" if _is_hex(value) else "unclassified"
    if rtype == _T_KERN_MODULE and name == "name":
        return "escaped"
    # audtrace's own fields (the kernel writes none of these in these records)
    if rtype == _T_KERNEL_OTHER and name in ("old", "new", "asked"):
        return "walltime"
    if rtype == _T_ANOM_ABEND and name == "status":
        return "wait_status"
    if rtype == _T_ANOM_ABEND and name in ("core", "by_comm"):
        return "escaped"
    return _FIELD_TYPES.get(name, "unclassified")


# ------------------------------------------------------------- C number parsing


class _ConvError(Exception):
    pass


def _strtoul(s: str, base: int, *, bits: int = 64, signed: bool = False) -> int:
    """glibc strtoul/strtoll: leading blanks, sign, 0x for base 16, stops at a non-digit."""
    i, n = 0, len(s)
    while i < n and s[i] in " \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    if base == 16 and s[i : i + 2].lower() == "0x" and i + 2 < n and _is_hex(s[i + 2]):
        i += 2
    digits = "0123456789abcdef"[:base]
    j = i
    while j < n and s[j].lower() in digits:
        j += 1
    value = int(s[i:j], base) if j > i else 0
    if signed:
        limit = 1 << (bits - 1)
        if (neg and value > limit) or (not neg and value >= limit):
            raise _ConvError
        return -value if neg else value
    if value >= 1 << bits:
        raise _ConvError
    return ((-value) & ((1 << bits) - 1)) if neg else value


# ------------------------------------------------------------------ decoding


def _unhex(s: str) -> bytes | None:
    """au_unescape: decode the leading run of hex digits (None if shorter than 2)."""
    if s.startswith("("):
        end = s.find(")")
        return None if end < 0 else s[: end + 1].encode()
    j = 0
    while j < len(s) and s[j] in "0123456789abcdefABCDEF":
        j += 1
    run = s[:j]
    if len(run) < 2:
        return None
    if len(run) % 2:
        run += "0"  # the missing low nibble reads as 0
    return bytes.fromhex(run)


def _c_buffer(run: str, data: bytes) -> bytes:
    """au_unescape's buffer: it decodes over the hex text in place, so after the data
    come a NUL and the hex digits not yet overwritten (C code reading past the data
    sees those)."""
    return data + b"\0" + run[len(data) + 1 :].encode("latin-1") + b"\0"


def _cstr(b: bytes) -> str:
    """A C string: up to the first NUL."""
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _escaped_bytes(val: str) -> bytes | None:
    if val.startswith('"'):
        end = val.find('"', 1)
        return b" " if end < 0 else val[1:end].encode("utf-8", "surrogateescape")
    if val.startswith("00"):  # abstract AF_UNIX name
        return _unhex(val[2:])
    return _unhex(val)


def _print_escaped(val: str) -> str:
    b = _escaped_bytes(val)
    return val if b is None else _cstr(b)


def _print_proctitle(val: str) -> str:
    b = _escaped_bytes(val)
    if b is None:
        return val
    if not val.startswith('"'):
        # argv is NUL-separated: NULs inside the encoded length become spaces. auparse
        # decodes in place over the hex text, so past the data its buffer holds a NUL
        # and then the hex digits not yet overwritten; a leading "00" reaches into them.
        buf = bytearray(_c_buffer(val[2:] if val.startswith("00") else val, b))
        for i in range(min(len(val) // 2, len(buf))):
            if buf[i] == 0:
                buf[i] = 0x20
        b = bytes(buf)
    return _cstr(b)


def _tty_escape(s: str) -> str:
    if not any(ord(c) < 32 for c in s):
        return s
    return "".join(f"\\{ord(c):03o}" if ord(c) < 32 else c for c in s)


# -------------------------------------------------------- value interpreters

_OPEN_FLAGS = (
    (0o1, "O_WRONLY"), (0o2, "O_RDWR"), (0o100, "O_CREAT"), (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"), (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"), (0o40000, "O_DIRECT"),
    (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"), (0o4000000, "__O_SYNC"), (0o10000000, "O_PATH"),
    (0o20000000, "__O_TMPFILE"),
)  # fmt: skip

_CAPS = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace",
    "sys_pacct", "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
    "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read",
    "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip

_FAMILIES = {
    1: "local", 2: "inet", 3: "ax25", 4: "ipx", 5: "appletalk", 6: "netrom", 7: "bridge",
    8: "atmpvc", 9: "x25", 10: "inet6", 11: "rose", 12: "decnet", 13: "netbeui",
    14: "security", 15: "key", 16: "netlink", 17: "packet", 18: "ash", 19: "econet",
    20: "atmsvc", 21: "rds", 22: "sna", 23: "irda", 24: "pppox", 25: "wanpipe", 26: "llc",
    29: "can", 30: "tipc", 31: "bluetooth", 32: "iucv", 33: "rxrpc", 34: "isdn", 35: "phonet",
    36: "ieee802154", 37: "caif", 38: "alg", 39: "nfc", 40: "vsock", 41: "kcm", 42: "qipcrtr",
    43: "smc", 44: "xdp",
}  # fmt: skip

_SOCK_TYPES = {
    1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM", 5: "SOCK_SEQPACKET",
    6: "SOCK_DCCP", 10: "SOCK_PACKET",
}  # fmt: skip

_SOCKETCALLS = (
    "", "socket", "bind", "connect", "listen", "accept", "getsockname", "getpeername",
    "socketpair", "send", "recv", "sendto", "recvfrom", "shutdown", "setsockopt",
    "getsockopt", "sendmsg", "recvmsg", "accept4", "recvmmsg", "sendmmsg",
)  # fmt: skip
_IPCCALLS = {
    1: "semop", 2: "semget", 3: "semctl", 4: "semtimedop", 11: "msgsnd", 12: "msgrcv",
    13: "msgget", 14: "msgctl", 21: "shmat", 22: "shmdt", 23: "shmget", 24: "shmctl",
}  # fmt: skip
# the rule lists as ausearch 3.0.9 names them: it has no name for io_uring's
_LISTS = {num: name for name, num in LISTS.items() if name != "io_uring"}


class Names:
    """uid/gid -> name, looked up once, forgotten when the user or group database changes:
    /etc/passwd or /etc/group touched (checked at most every `check_s`), or every `ttl_s`
    for names from elsewhere (NSS: LDAP, sssd). `epoch` counts the changes; what was
    rendered with names is kept with the epoch it was rendered in (see `current`)."""

    FILES = ("/etc/passwd", "/etc/group")

    def __init__(self, check_s: float = 1.0, ttl_s: float = 60.0) -> None:
        self.check_s, self.ttl_s = check_s, ttl_s
        self.epoch = 0
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}
        self._stamp = self._files()
        self._checked = self._since = time.monotonic()

    def _files(self) -> tuple:
        out = []
        for path in self.FILES:
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self) -> None:
        """Cheap enough to call for every batch of events written."""
        now = time.monotonic()
        if now - self._checked < self.check_s:
            return
        self._checked = now
        stamp = self._files()
        if stamp != self._stamp or now - self._since >= self.ttl_s:
            self._stamp, self._since = stamp, now
            self.forget()

    def forget(self) -> None:
        self.users.clear()
        self.groups.clear()
        self.epoch += 1

    def user(self, uid: int) -> str:
        return self._name(self.users, uid, lambda n: pwd.getpwuid(n).pw_name)

    def group(self, gid: int) -> str:
        return self._name(self.groups, gid, lambda n: grp.getgrgid(n).gr_name)

    @staticmethod
    def _name(cache: dict[int, str], num: int, lookup) -> str:
        name = cache.get(num)
        if name is None:
            try:
                name = lookup(num & 0xFFFFFFFF)
            except KeyError:
                name = f"unknown({num})"
            cache[num] = name
        return name


NAMES = Names()


def _user_name(uid: int, ctx: dict) -> str:
    if uid == -1:
        return "unset"
    if uid == 0:
        return "root"
    return NAMES.user(uid)


def _group_name(gid: int, ctx: dict) -> str:
    if gid == -1:
        return "unset"
    if gid == 0:
        return "root"
    return NAMES.group(gid)


def _print_signal(val: str, base: int) -> str:
    n = s32(_strtoul(val, base))
    if 0 <= n < 32:
        return signal_name(n)
    if SIGRTMIN <= n <= SIGRTMAX:
        return signal_name(n)  # audtrace goes beyond ausearch here
    return f"unknown-signal({'0x' if base == 16 else ''}{val})"


def _print_mode(val: str, base: int) -> str:
    m = _strtoul(val, base) & 0xFFFFFFFF
    ftype = m & 0o170000
    text = file_types().get(ftype) or f"{ftype // 0o10000:03o}"
    for bit, name in ((0o4000, "suid"), (0o2000, "sgid"), (0o1000, "sticky")):
        if m & bit:
            text += "," + name
    return f"{text},{m & 0o777:03o}"


def _print_mode_short(val: str, base: int) -> str:
    m = _strtoul(val, base) & 0xFFFFFFFF
    special = [n for b, n in ((0o4000, "suid"), (0o2000, "sgid"), (0o1000, "sticky")) if m & b]
    perms = f"0{m & 0o777:03o}"
    return ",".join([*special, perms])


def _print_open_flags(val: str) -> str:
    flags = _strtoul(val, 16) & 0xFFFFFFFF
    names = ["O_RDONLY"] if flags & 0o3 == 0 else []
    names += [name for bit, name in _OPEN_FLAGS if flags & bit]
    return "|".join(names) or f"0x{val}"


def _print_access(val: str) -> str:
    mode = _strtoul(val, 16)
    if mode & 0xF == 0:
        return "F_OK"
    names = [n for b, n in ((1, "X_OK"), (2, "W_OK"), (4, "R_OK")) if mode & b]
    return "|".join(names) or f"0x{val}"


def _print_dirfd(val: str) -> str:
    return "AT_FDCWD" if _strtoul(val, 16) & 0xFFFFFFFF == 0xFFFFFF9C else f"0x{val}"


def _print_cap_bitmap(val: str) -> str:
    bits = _strtoul(val, 16)
    names = [name for i, name in enumerate(_CAPS) if bits >> i & 1]
    return ",".join(names) or "none"


def _print_capability(val: str, base: int) -> str:
    n = s32(_strtoul(val, base))
    if 0 <= n < len(_CAPS):
        return _CAPS[n]
    return f"unknown-capability({'0x' if base == 16 else ''}{val})"


def _print_perm(val: str) -> str:
    p = s32(_strtoul(val, 10, signed=True))
    if p == 0:
        p = 0xF  # the kernel reads "nothing" as "everything"
    return ",".join(n for b, n in ((4, "read"), (2, "write"), (1, "exec"), (8, "attr")) if p & b)


def _print_exit(val: str) -> str:
    n = _strtoul(val, 10, signed=True)
    if n >= 0:
        return val
    return f"{errno_name(-n) or '(null)'}({errno_message(-n)})"


def _print_success(val: str) -> str:
    if not val[:1].isdigit():
        return val
    n = s32(_strtoul(val, 10))
    return {0: "no", 1: "yes"}.get(n, "unset")


def _print_arch(val: str, machine: int | None) -> str:
    arch = _strtoul(val, 16) & 0xFFFFFFFF
    name = ARCH_NAMES.get(arch)
    return name if name else f"unknown-elf-type({val})"


def _print_sockaddr(val: str) -> str:
    slen = len(val) // 2
    data = _unhex(val)
    if data is None:
        return f"malformed-host({val})"
    # C reads past short buffers: the rest of au_unescape's buffer, then zeros
    buf = _c_buffer(val, data) + b"\0" * 128
    fam = struct.unpack_from("=H", buf)[0]
    name = _FAMILIES.get(fam)
    if name is None:
        return f"unknown-family({fam})"
    if fam == 1:
        if slen < 4:
            return f"{{ saddr_fam={name} sockaddr len too short }}"
        path = buf[2:] if buf[2] else buf[3:]
        return f"{{ saddr_fam={name} path={_cstr(path[:108])} }}"
    if fam == 2:
        if slen < 16:
            return f"{{ saddr_fam={name} sockaddr len too short }}"
        port = struct.unpack_from("!H", buf, 2)[0]
        return f"{{ saddr_fam={name} laddr={socket.inet_ntoa(buf[4:8])} lport={port} }}"
    if fam == 10:
        if slen < 28:
            return f"{{ saddr_fam={name} sockaddr6 len too short }}"
        port = struct.unpack_from("!H", buf, 2)[0]
        scope = struct.unpack_from("=I", buf, 24)[0]
        addr = socket.inet_ntop(socket.AF_INET6, buf[8:24])
        try:
            host, _ = socket.getnameinfo(
                # flowinfo does not show in the text (and Python limits it to 20 bits)
                (addr, port, 0, scope),
                socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
            )
        except OSError:
            return f"{{ saddr_fam={name} (error resolving addr) }}"
        return f"{{ saddr_fam={name} laddr={host} lport={port} }}"
    if fam == 16:
        if slen < 12:
            return f"{{ saddr_fam={name} len too short }}"
        nl_fam, nl_pid = struct.unpack_from("=H2xI", buf)
        return f"{{ saddr_fam={name} nlnk-fam={nl_fam} nlnk-pid={nl_pid} }}"
    if fam == 3:
        # printed with %c: a NUL in the callsign ends the C string there
        call = buf[2:9].decode("latin-1")
        return _cstr(f"{{ saddr_fam={name} call={call} }}".encode("latin-1"))
    if fam == 8:
        return f"{{ saddr_fam={name} int={struct.unpack_from('=h', buf, 4)[0]} }}"
    if fam == 9:
        return f"{{ saddr_fam={name} laddr={_cstr(buf[2:17])} }}"
    return f"{{ saddr_fam={name} (unsupported) }}"


# syscall name -> interpreter of its argument, per argument index.
def _sig16(v: str, _a: tuple) -> str:
    return _print_signal(v, 16)


def _uid16(v: str, a: tuple) -> str:
    return _user_name(s32(_strtoul(v, 16)), a[2])


def _gid16(v: str, a: tuple) -> str:
    return _group_name(s32(_strtoul(v, 16)), a[2])


def _dirfd(v: str, _a: tuple) -> str:
    return _print_dirfd(v)


def _oflags(v: str, _a: tuple) -> str:
    return _print_open_flags(v)


def _mshort(v: str, _a: tuple) -> str:
    return _print_mode_short(v, 16)


def _access(v: str, _a: tuple) -> str:
    return _print_access(v)


def _domain(v: str, _a: tuple) -> str:
    fam = s32(_strtoul(v, 16))
    return _FAMILIES.get(fam) or f"unknown-family(0x{v})"


def _socktype(v: str, _a: tuple) -> str:
    return _SOCK_TYPES.get(_strtoul(v, 16) & 0xFF) or f"unknown-type({v})"


def _socketcall(v: str, _a: tuple) -> str:
    n = s32(_strtoul(v, 16))
    return _SOCKETCALLS[n] if 0 < n < len(_SOCKETCALLS) else f"unknown-socketcall({v})"


def _exit_code(v: str, _a: tuple) -> str:
    return {"0": "EXIT_SUCCESS", "1": "EXIT_FAILURE"}.get(v, "UNKNOWN")


def _prctl_a1(v: str, a: tuple) -> str | None:
    if a[0] in (23, 24):  # PR_CAPBSET_READ, PR_CAPBSET_DROP
        return _print_capability(v, 16)
    if a[0] == 1:  # PR_SET_PDEATHSIG
        return _print_signal(v, 16)
    return None


def _open_mode(v: str, a: tuple) -> str | None:
    return _print_mode_short(v, 16) if a[1] & 0o100 else None  # O_CREAT


def _mode16(v: str, _a: tuple) -> str:
    return _print_mode(v, 16)


_DIRFD_A0 = (
    "renameat", "renameat2", "readlinkat", "mkdirat", "mknodat", "fchownat", "futimesat",
    "fchmodat", "faccessat", "faccessat2", "futimensat", "unlinkat", "utimensat", "linkat",
    "newfstatat", "openat", "openat2", "name_to_handle_at",
)  # fmt: skip

_CLOCKS = ("CLOCK_REALTIME", "CLOCK_MONOTONIC", "CLOCK_PROCESS_CPUTIME_ID",
           "CLOCK_THREAD_CPUTIME_ID", "CLOCK_MONOTONIC_RAW", "CLOCK_REALTIME_COARSE",
           "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME", "CLOCK_REALTIME_ALARM",
           "CLOCK_BOOTTIME_ALARM", "CLOCK_SGI_CYCLE", "CLOCK_TAI")  # linux/time.h


def _clockid(v: str, _a: tuple) -> str:
    n = _strtoul(v, 16)
    return _CLOCKS[n] if n < len(_CLOCKS) else f"unknown-clk_id(0x{v})"


def _ioctl_req(v: str, _a: tuple) -> str:
    from .ioctls import interpreted

    return interpreted(_strtoul(v, 16))


def _print_walltime(val: str) -> str:
    """`"1795318020.843582182"` -> `11/22/26 03:27:00.843582182`, as the stamps read."""
    sec, _, frac = val.strip('"').partition(".")
    if not sec.lstrip("-").isdigit() or not frac.isdigit():
        raise _ConvError
    return time.strftime("%x %T", time.localtime(int(sec))) + f".{frac}"


def _print_wait_status(val: str) -> str:
    """task->exit_code (written quoted): low 7 bits the signal (0x80 core dumped), else
    status << 8."""
    n = _strtoul(val.strip('"'), 10)
    if n & 0x7F:
        core = ",core" if n & 0x80 else ""
        return f"killed({signal_name(n & 0x7F)}{core})"
    return f"exited({(n >> 8) & 0xFF})"


_ARGS: dict[int, dict] = {0: {}, 1: {}, 2: {}, 3: {}}
_ARGS[0].update({n: _dirfd for n in _DIRFD_A0})
_ARGS[0].update({n: _uid16 for n in ("setuid", "setreuid", "setresuid", "setfsuid")})
_ARGS[0].update({n: _gid16 for n in ("setgid", "setregid", "setresgid", "setfsgid")})
_ARGS[0].update(
    {
        "rt_sigaction": _sig16,
        "socket": _domain,
        "socketcall": _socketcall,
        "exit": _exit_code,
        "exit_group": _exit_code,
        # clock ids: ausearch names clock_settime's; audtrace also clock_adjtime's
        "clock_settime": _clockid,
        "clock_adjtime": _clockid,
    }  # fmt: skip
)
_ARGS[1].update(
    {
        "fchmod": _mshort, "chmod": _mshort, "creat": _mshort, "mkdir": _mshort,
        "chown": _uid16, "chown32": _uid16, "setreuid": _uid16, "setresuid": _uid16,
        "setregid": _gid16, "setresgid": _gid16, "socket": _socktype, "mknod": _mode16,
        "mq_open": _oflags, "open": _oflags, "access": _access, "kill": _sig16,
        "tkill": _sig16, "prctl": _prctl_a1, "ioctl": _ioctl_req,
        # beyond ausearch: these carry the signal in a1 too
        "rt_sigqueueinfo": _sig16, "pidfd_send_signal": _sig16,
    }
)  # fmt: skip
_ARGS[2].update(
    {
        "openat": _oflags, "open_by_handle_at": _oflags, "open": _open_mode,
        "fchmodat": _mshort, "faccessat": _access, "faccessat2": _access,
        "setresuid": _uid16, "setresgid": _gid16, "mkdirat": _mshort, "mknodat": _mshort,
        "mq_open": _open_mode, "readlinkat": _dirfd, "renameat": _dirfd, "renameat2": _dirfd,
        "linkat": _dirfd, "tgkill": _sig16,
        # beyond ausearch
        "rt_tgsigqueueinfo": _sig16,
    }
)  # fmt: skip


# Syscall arguments ausearch 3.0.9 names and audtrace prints as 0x.., or where the two
# name differently (ioctl requests and clock ids audtrace names beyond ausearch's tables):
# {name: arg indexes}.
NOT_INTERPRETED: dict[str, tuple[int, ...]] = {
    "clock_settime": (0,), "clock_adjtime": (0,), "ioctl": (1,),
    "personality": (0,), "ptrace": (0,), "prctl": (0,),
    "getrlimit": (0,), "setrlimit": (0,), "unshare": (0,), "bpf": (0,),
    "fcntl": (1, 2), "fcntl64": (1, 2), "getsockopt": (1, 2), "setsockopt": (1, 2),
    "setns": (1,), "sched_setscheduler": (1,), "epoll_ctl": (1,), "umount2": (1,),
    "socket": (2,), "sendmsg": (2,), "recvmsg": (2,), "shmget": (2,),
    "mmap": (2, 3), "mmap2": (2, 3), "mprotect": (2,), "lseek": (2,), "clone": (2,),
    "clone2": (2,), "mount": (3,), "recv": (3,), "recvfrom": (3,), "recvmmsg": (3,),
    "send": (3,), "sendto": (3,), "sendmmsg": (3,),
}  # fmt: skip


def _print_arg(idx: int, val: str, machine: int, syscall: int, ctx: dict) -> str:
    name = syscall_name(machine, syscall) if syscall >= 0 else None
    fn = _ARGS[idx].get(name) if name else None
    if fn is not None:
        out = fn(val, (ctx.get("_a0", 0), ctx.get("_a1", 0), ctx))
        if out is not None:
            return out
    return f"0x{val}"


def _print_syscall(val: str, machine: int, syscall: int, ctx: dict) -> str:
    name = syscall_name(machine, syscall)
    if name is None:
        return f"unknown-syscall({s32(syscall)})"
    a0 = ctx.get("_a0", 0)
    if name == "socketcall" and a0 < len(_SOCKETCALLS) and a0 > 0:
        return f"{name}({_SOCKETCALLS[a0]})"
    if name == "ipc" and a0 in _IPCCALLS:
        return f"{name}({_IPCCALLS[a0]})"
    return name


def interpret_value(
    rtype: int, name: str, val: str, ctx: dict, *, escape: bool = True
) -> tuple[str, str]:
    """Interpret one field: ``(kind, text)``; kind as :func:`field_type`.

    ``ctx`` carries ``machine``/``syscall`` of the current SYSCALL record and caches.
    With ``escape`` control characters are written ``\\ooo`` as ausearch's tty mode does.
    """
    kind = field_type(rtype, name, val)
    machine = ctx.get("machine", -1)
    syscall = ctx.get("syscall", -1) if rtype in (_T_SYSCALL, _T_SECCOMP) else 0
    try:
        if kind == "uid":
            out = _user_name(s32(_strtoul(val, 10)), ctx)
        elif kind == "gid":
            out = _group_name(s32(_strtoul(val, 10)), ctx)
        elif kind == "syscall":
            out = _print_syscall(val, machine, syscall, ctx)
        elif kind == "arch":
            out = _print_arch(val, machine)
        elif kind == "exit":
            out = _print_exit(val)
        elif kind in ("escaped", "key"):
            out = _print_escaped(val)
        elif kind == "proctitle":
            out = _print_proctitle(val)
        elif kind == "perm":
            out = _print_perm(val)
        elif kind == "mode":
            out = _print_mode(val, 8)
        elif kind == "mode_short":
            out = _print_mode_short(val, 8)
        elif kind == "sockaddr":
            out = _print_sockaddr(val)
        elif kind == "promisc":
            out = "no" if s32(_strtoul(val, 10, signed=True)) == 0 else "yes"
        elif kind == "capability":
            out = _print_capability(val, 10)
        elif kind == "success":
            out = _print_success(val)
        elif kind in ("a0", "a1", "a2", "a3"):
            out = _print_arg(int(kind[1]), val, machine, syscall, ctx)
        elif kind == "signal":
            out = _print_signal(val, 10)
        elif kind == "list":
            n = s32(_strtoul(val, 10))
            out = _LISTS.get(n) or f"unknown-list({val})"
        elif kind == "session":
            out = "unset" if val == "4294967295" else val
        elif kind == "cap_bitmap":
            out = _print_cap_bitmap(val)
        elif kind == "oflag":
            out = _print_open_flags(val)
        elif kind == "walltime":
            out = _print_walltime(val)
        elif kind == "wait_status":
            out = _print_wait_status(val)
        else:
            out = val
    except _ConvError:
        out = f"conversion error({val})"
    if escape:
        if kind == "key":
            out = KEY_SEP.join(_tty_escape(k) for k in out.split(KEY_SEP))
        else:
            out = _tty_escape(out)
    return kind, out


# ------------------------------------------------------------ record scanning


def _type_number(rec: Record) -> int:
    try:
        return _rec.record_type_number(rec.type)
    except ValueError:
        return -1


def _scan(rtype: int, text: str, ctx: dict) -> Iterator[tuple[str, str, str, str, bool]]:
    """Walk a record body the way ausearch -i does.

    Yields ``(printed, name, value, kind_out, comma)`` per field: ``printed`` is the
    text ausearch copies before ``=`` (separators, the ``msg=`` of user messages).
    The last item has name ``""`` and carries any trailing text to print as is.
    """
    s = ":" + (" " + text if text else "")
    cur: int | None = 0
    found = False
    eq = -1
    comma = False
    while cur is not None and cur < len(s):
        eq = s.find("=", cur)
        if eq < 0:
            break
        comma = False
        found = True
        k = eq
        while k > cur and s[k] != " ":
            k -= 1
        name = s[k:eq]
        printed = s[cur:eq]
        vstart = eq + 1
        if name == "msg":
            # user message: its fields follow inside msg='...'
            yield printed, "msg", "", "", False
            cur = vstart
            continue
        if name.startswith("'"):
            name = name[1:]
        if vstart < len(s) and s[vstart] in "'\"":
            close = s.find(s[vstart], vstart + 1)
            if close < 0:
                value, cur = s[vstart:], None
            else:
                value = s[vstart : close + 1]
                cur = close + 2 if close + 1 < len(s) else close + 1
        else:
            c = s.find(",", vstart)
            sp = s.find(" ", vstart)
            if c >= 0 and (sp < 0 or c < sp):
                whole = s[vstart:] if sp < 0 else s[vstart:sp]
                if field_type(rtype, name, whole) == "mac_label":
                    value = whole
                    cur = None if sp < 0 else sp + 1
                else:
                    value, cur, comma = s[vstart:c], c + 1, True
            elif sp >= 0:
                value, cur = s[vstart:sp], sp + 1
            else:
                value, cur = s[vstart:], None
        yield printed, name.lstrip(" ("), value, "", comma
    rest = ""
    if not found and eq < 0:
        rest = _tty_escape(s) + "\n"
    elif comma and cur is not None:
        rest = _tty_escape(s[cur:]) + "\n"
    yield rest, "", "", "", False


def _record_context(rec: Record, ctx: dict) -> dict:
    """Per-record state: ausearch resets machine/syscall for every record."""
    local = dict(ctx)
    local["machine"] = -1
    local["syscall"] = -1
    items = rec.field_items()
    if rec.type == "SYSCALL":
        for key, value in items:
            if key in ("a0", "a1"):
                try:
                    local["_" + key] = _strtoul(value, 16)
                except _ConvError:
                    local["_" + key] = 0
    return local


def _walk(
    rec: Record, text: str, ctx: dict, *, escape: bool = True,
    kinds: tuple[str, ...] | None = None,
) -> Iterator[tuple[str, str, str, tuple[str, str] | str, bool]]:
    """Interpreted fields of one record: ``(printed, name, raw value, out, comma)``.
    With `kinds`, only fields of those kinds are interpreted (the others get ``out`` None)."""
    rtype = _type_number(rec)
    local = _record_context(rec, ctx)
    for printed, name, value, _, comma in _scan(rtype, text, local):
        if not name or name == "msg":
            yield printed, name, value, "", comma
            continue
        if name == "acct" and value.endswith(":"):
            value = value[:-1]
        if rtype in (_T_SYSCALL, _T_SECCOMP):
            if local["machine"] == -1:
                local["machine"] = ctx.get("machine") or host_arch()
            if name == "arch":
                with contextlib.suppress(_ConvError):
                    local["machine"] = _strtoul(value, 16) & 0xFFFFFFFF
            if local["syscall"] < 0 and name == "syscall":
                with contextlib.suppress(_ConvError):
                    local["syscall"] = s32(_strtoul(value, 10))
        if kinds is not None and field_type(rtype, name, value) not in kinds:
            yield printed, name, value, (None, None), comma
            continue
        kind, out = interpret_value(rtype, name, value, local, escape=escape)
        yield printed, name, value, (kind, out), comma


def interpret_record(rec: Record, ctx: dict | None = None) -> list[tuple[str, str]]:
    """``(field name, interpreted value)`` for each field, as ``ausearch -i`` shows them.

    ``ctx`` is an optional dict shared across calls (name caches; ``machine`` sets the
    AUDIT_ARCH used for a SYSCALL record without ``arch=``, default: this host).
    The fields of a user message's ``msg='...'`` are listed individually.
    """
    ctx = {} if ctx is None else ctx
    out = []
    for _printed, name, _value, res, _comma in _walk(rec, rec.text(), ctx):
        if name and name != "msg":
            out.append((name, res[1]))
    return out


def _interpreted_line(ev: Event, rec: Record, ctx: dict) -> str:
    rtype = _type_number(rec)
    tm = time.localtime(ev.sec)
    when = time.strftime("%m/%d/%y %H:%M:%S", tm)
    parts = [f"node={ev.node} " if ev.node else ""]
    name = _rec.record_type_name(rtype) if rtype >= 0 else rec.type
    parts.append(f"type={name} msg=audit({when}.{ev.msec:03d}:{ev.serial}) ")
    for printed, fname, value, res, comma in _walk(rec, _rec.record_text(ev, rec), ctx):
        if not fname:
            parts.append(printed)
            continue
        parts.append(printed + "=")
        if fname == "msg":
            continue
        kind, out = res
        if kind == "unclassified":
            parts.append(value + ("," if comma else " "))
        elif kind == "key":
            keys = out.split(KEY_SEP)
            parts.append(keys[0] + "".join(f" key={k}" for k in keys[1:]) + " ")
        elif kind == "tty_data":
            parts.append(out)
        else:
            parts.append(out + " ")
    return "".join(parts)


def format_interpreted(ev: Event, ctx: dict | None = None) -> str:
    """The event as ``ausearch -i`` prints it: ``----`` then the records, last first.

    No trailing newline.
    """
    ctx = {} if ctx is None else ctx
    records = list(reversed(ev.records))
    if records:
        first = _type_number(records[0])
        if 1200 <= first < 1300:  # daemon records: ausearch prints only the last one
            records = records[:1]
    return "\n".join(["----", *(_interpreted_line(ev, r, ctx) for r in records)])


# ------------------------------------------------------------------ ENRICHED

_ENRICH_KINDS = ("uid", "gid", "syscall", "arch", "sockaddr")


def _needs_encoding(s: str) -> bool:
    return any(c == '"' or ord(c) < 0x21 or ord(c) >= 0x7F for c in s)


def enrichment(
    rec: Record, ctx: dict | None = None, *, encode: bool = True
) -> list[tuple[str, str]]:
    """The ``NAME=value`` pairs auditd's ENRICHED format appends to ``rec``.

    uid/gid names are encoded like untrusted strings (``AUID="unset"``), syscall,
    arch and sockaddr are written bare (``SADDR={ saddr_fam=inet ... }``).
    ``encode=False`` gives the plain interpreted texts (``("AUID", "unset")``).
    """
    ctx = {} if ctx is None else ctx
    pairs = []
    # auditd interprets in raw escape mode (no \\ooo escaping)
    for _printed, name, _value, res, _comma in _walk(rec, rec.text(), ctx, escape=False,
                                                     kinds=_ENRICH_KINDS):
        if not name or name == "msg" or res[0] not in _ENRICH_KINDS:
            continue
        kind, out = res
        if encode and kind in ("uid", "gid"):
            raw = out.encode("utf-8", "surrogateescape")
            out = raw.hex().upper() if _needs_encoding(out) else f'"{out}"'
        pairs.append((name.upper(), out))
    return pairs


def _memo(memo: dict, key: object, make):
    """What `make()` gives, kept in `memo` while the user and group names are the same."""
    hit = memo.get(key)
    if hit is not None and hit[0] == NAMES.epoch:
        return hit[1]
    value = make()
    memo[key] = (NAMES.epoch, value)
    return value


_HEAD: dict[tuple, list[tuple[str, str]]] = {}
_MULTIPLEXED = ("socketcall", "ipc")   # their name depends on a0


def _head_enrichment(rec: SyscallRecord) -> list[tuple[str, str]]:
    """ARCH= and SYSCALL= of a SYSCALL record's head, once per (arch, syscall)."""
    key: tuple = (rec.arch, rec.nr)
    if syscall_name(rec.arch & 0xFFFFFFFF, rec.nr) in _MULTIPLEXED:
        key = (rec.arch, rec.nr, rec.args[0])
    pairs = _HEAD.get(key)
    if pairs is None:
        if len(_HEAD) > 4096:
            _HEAD.clear()
        pairs = _HEAD[key] = enrichment(Record("SYSCALL", rec.head_items()))
    return pairs


def record_enrichment(rec: Record, ctx: dict | None = None, *,
                      encode: bool = True) -> list[tuple[str, str]]:
    """`enrichment(rec)`, kept with records and identities written many times."""
    if type(rec) is SyscallRecord and rec.ident is not None:
        run = rec.ident
        pairs = _head_enrichment(rec) + _memo(
            run.memo, ("enrich", encode),
            lambda: enrichment(Record("SYSCALL", list(run.items)), encode=encode))
        if rec.after:
            pairs = pairs + enrichment(Record("SYSCALL", list(rec.after)), encode=encode)
        return pairs
    if rec.memo is None:
        return enrichment(rec, ctx, encode=encode)
    return _memo(rec.memo, ("enrich", encode), lambda: enrichment(rec, ctx, encode=encode))


def format_enriched(ev: Event, ctx: dict | None = None) -> str:
    """The event as auditd's ENRICHED log format: raw line, 0x1d, interpretations.

    Records with nothing to interpret carry no 0x1d. No trailing newline.
    """
    ctx = {} if ctx is None else ctx
    lines = _rec.raw_lines(ev)
    for i, rec in enumerate(ev.records):
        pairs = record_enrichment(rec, ctx)
        if pairs:
            lines[i] += SEPARATOR + " ".join(f"{k}={v}" for k, v in pairs)
    return "\n".join(lines)
