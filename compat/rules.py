"""auditctl's rule language: parse it, hold it, list it back as `auditctl -l` does.

What auditctl (audit-userspace 3.0.9, src/auditctl.c + lib/libaudit.c) accepts is accepted
here with the same meaning, and what it refuses is refused with its wording, quoting the bad
token: `-F unknown field: comm`, `arch must be before -S`, `Syscall name unknown: nosuch`.
A rule file (augenrules format: one auditctl command per line, `#` comments, blank lines)
names the line of its first error.

The model is the kernel's: a :class:`Rule` is what `struct audit_rule_data` carries (list,
action, syscall numbers, (field, operator, value) triples in order), with values already
converted as libaudit converts them (user and group names to ids, `b64` to its AUDIT_ARCH,
`-EACCES` to -13, `wa` to permission bits, `unset` to 4294967295). Keys are the last field,
one field for all of a rule's keys joined by \\x01, as auditctl sends them.
`str(rule)` is the rule as `auditctl -l` prints it, and `parse_line(str(rule)) == rule`.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import tables
from .ints import s32
from .tables import AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64

# ---- the kernel's numbers (uapi linux/audit.h) and auditctl's names for them --------------
LISTS = {"user": 0, "task": 1, "exit": 4, "exclude": 5, "filesystem": 6, "io_uring": 7}
ACTIONS = {"never": 0, "possible": 1, "always": 2}
OPERATORS = {
    "=": 0x40000000,
    "!=": 0x30000000,
    ">": 0x20000000,
    ">=": 0x60000000,
    "<": 0x10000000,
    "<=": 0x50000000,
    "&": 0x08000000,
    "&=": 0x48000000,
}
# lib/fieldtab.h, as libaudit names the fields (compat/data/fields.tsv); "loginuid" is
# auditctl's alias of auid
FIELDS = tables.rule_fields()
ALIASES = {"loginuid": "auid"}
STRING_FIELDS = frozenset(
    [
        "subj_user",
        "subj_role",
        "subj_type",
        "subj_sen",
        "subj_clr",
        "obj_user",
        "obj_role",
        "obj_type",
        "obj_lev_low",
        "obj_lev_high",
        "path",
        "dir",
        "exe",
        "key",
    ]
)
UID_FIELDS = ("uid", "euid", "suid", "fsuid", "auid", "obj_uid")
GID_FIELDS = ("gid", "egid", "sgid", "fsgid", "obj_gid")
PERM_BITS = (("r", 4), ("w", 2), ("x", 1), ("a", 8))  # AUDIT_PERM_READ/WRITE/EXEC/ATTR
UNSET = 0xFFFFFFFF
KEY_SEP = "\x01"
MAX_KEY_LEN = 256
MAX_FIELDS = 64
MAX_SYSCALLS = 64 * 32  # AUDIT_BITMASK_SIZE words of syscall bits
PATH_MAX = 4096

# -C LEFT op RIGHT -> AUDIT_COMPARE_* (either order names the same comparison)
_COMPARE_PAIRS = {
    ("uid", "obj_uid"): 1,
    ("gid", "obj_gid"): 2,
    ("euid", "obj_uid"): 3,
    ("egid", "obj_gid"): 4,
    ("auid", "obj_uid"): 5,
    ("suid", "obj_uid"): 6,
    ("sgid", "obj_gid"): 7,
    ("fsuid", "obj_uid"): 8,
    ("fsgid", "obj_gid"): 9,
    ("uid", "auid"): 10,
    ("uid", "euid"): 11,
    ("uid", "fsuid"): 12,
    ("uid", "suid"): 13,
    ("auid", "fsuid"): 14,
    ("auid", "suid"): 15,
    ("auid", "euid"): 16,
    ("euid", "suid"): 17,
    ("euid", "fsuid"): 18,
    ("suid", "fsuid"): 19,
    ("gid", "egid"): 20,
    ("gid", "fsgid"): 21,
    ("gid", "sgid"): 22,
    ("egid", "fsgid"): 23,
    ("egid", "sgid"): 24,
    ("sgid", "fsgid"): 25,
}
COMPARES = {**_COMPARE_PAIRS, **{(b, a): v for (a, b), v in _COMPARE_PAIRS.items()}}
# value -> (left, right) as auditctl -l prints it
COMPARE_NAMES = {v: pair for pair, v in _COMPARE_PAIRS.items()}

# what -F arch=b64/b32 mean on each machine (libaudit audit_determine_machine)
AUDIT_ARCH_ARM = 0x40000028
ARCH_PAIRS = {
    AUDIT_ARCH_X86_64: (AUDIT_ARCH_X86_64, AUDIT_ARCH_I386),
    AUDIT_ARCH_AARCH64: (AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM),
}
KNOWN_ARCHES = frozenset(a for pair in ARCH_PAIRS.values() for a in pair)
_MACHINE_NAMES = {
    "x86_64": AUDIT_ARCH_X86_64,
    "i386": AUDIT_ARCH_I386,
    "i486": AUDIT_ARCH_I386,
    "i586": AUDIT_ARCH_I386,
    "i686": AUDIT_ARCH_I386,
    "aarch64": AUDIT_ARCH_AARCH64,
    "armeb": AUDIT_ARCH_ARM,
    "armv5tejl": AUDIT_ARCH_ARM,
    "armv7l": AUDIT_ARCH_ARM,
}
_64BIT = 0x80000000

Field = tuple[str, str, "int | str"]


class RuleError(ValueError):
    """A rule auditctl would refuse. `str()` reads like auditctl's message; a file's error
    also names the line."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.path = message, line, path

    def at(self, line: int, path: str) -> RuleError:
        return RuleError(self.message, line, path)

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} (there was an error in line {self.line} of {self.path})"


# ---- the model -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One rule as the kernel holds it. `syscalls` empty on a list that takes syscalls means
    all of them (`-S all`, or no -S: auditctl sends the full mask).

    Made from the parser's values, from code (`Rule(syscalls=[62], fields=[("arch", "=",
    "b64"), ("key", "=", "k")])`) or from the kernel's list (tracer/audit/netlink.py), a rule
    holds its values normalized as libaudit converts them (`b64` to its AUDIT_ARCH, `unset`
    to 4294967295, perm `wa` to bits, `loginuid` to auid, exit signed) and its keys in one
    field joined by \\x01, so equal rules compare equal whatever made them."""

    list: str = "exit"
    action: str = "always"
    syscalls: tuple[int, ...] = ()
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        if self.list not in LISTS:
            raise ValueError(f"unknown audit filter list {self.list!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit rule action {self.action!r}")
        if len(self.fields) > MAX_FIELDS:
            raise ValueError(f"more than {MAX_FIELDS} fields")
        if any(not 0 <= nr < MAX_SYSCALLS for nr in self.syscalls):
            raise ValueError(f"syscall number out of range in {self.syscalls}")
        object.__setattr__(self, "syscalls", tuple(sorted(set(self.syscalls))))
        object.__setattr__(self, "fields", _merge_keys([normalized(*f) for f in self.fields]))

    @property
    def arch(self) -> int | None:
        return next((int(v) for n, _o, v in self.fields if n == "arch"), None)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for n, _o, v in self.fields if n == "key" for k in str(v).split(KEY_SEP))

    def takes_syscalls(self) -> bool:
        return self.list in ("exit", "io_uring")

    def is_watch(self) -> bool:
        """Listed as `-w PATH -p PERM`: only path/dir, perm and key, perm present, all syscalls
        (auditctl-listing.c is_watch; there a perm without a path also counts, and lists as
        a bare ` -p x` nothing parses back)."""
        names = [n for n, _o, _v in self.fields]
        return (
            self.list == "exit"
            and not self.syscalls
            and "perm" in names
            and ("path" in names or "dir" in names)
            and all(n in ("path", "dir", "perm", "key") for n in names)
        )

    def __str__(self) -> str:
        return format_rule(self)


_FIELD_NAMES = {num: name for name, num in FIELDS.items()}
_UNSET_FIELDS = frozenset([*UID_FIELDS, *GID_FIELDS, "sessionid"])


def field_number(name: str) -> int:
    """The kernel's number of a rule field; `fN` is how auditctl lists one it has no name for."""
    name = ALIASES.get(name, name)
    if name in FIELDS:
        return FIELDS[name]
    if re.fullmatch(r"f\d+", name):
        return int(name[1:])
    raise ValueError(f"unknown audit rule field {name!r}")


def field_name(number: int) -> str:
    return _FIELD_NAMES.get(number, f"f{number}")


def normalized(name: str, op: str, value: int | str) -> Field:
    """One field as the kernel gives it back, values converted as libaudit converts them."""
    num = field_number(name)
    name = field_name(num)
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r} in field {name}")
    if name in STRING_FIELDS:
        if not isinstance(value, str):
            raise ValueError(f"field {name} takes a string, not {value!r}")
        if name == "key" and len(value.encode()) > MAX_KEY_LEN:
            raise ValueError(f"key longer than {MAX_KEY_LEN} bytes")
        return name, op, value
    if name == "arch" and isinstance(value, str):
        b64, b32 = machine_arches()
        named = {"b64": b64, "b32": b32}
        value = named[value.lower()] if value.lower() in named else int(value, 0)
    elif name == "perm" and isinstance(value, str):
        bits = 0
        for ch in value:
            bits |= dict(PERM_BITS)[ch]
        value = bits
    elif isinstance(value, str):
        value = UNSET if value == "unset" and name in _UNSET_FIELDS else int(value, 0)
    if name == "exit":  # the only field the kernel compares signed, against a negative errno
        return name, op, s32(value)
    return name, op, value & 0xFFFFFFFF


def _merge_keys(fields: list[Field]) -> tuple[Field, ...]:
    """The kernel takes one key field per rule: several keys share it, joined by \\x01."""
    keys = [str(v) for n, _o, v in fields if n == "key"]
    if len(keys) < 2:
        return tuple(fields)
    first = next(i for i, f in enumerate(fields) if f[0] == "key")
    rest = [f for f in fields if f[0] != "key"]
    return (*rest[:first], ("key", "=", KEY_SEP.join(keys)), *rest[first:])


@dataclass(frozen=True)
class RuleCommand:
    """-a/-A (add; prepend) or -d (delete) of a rule, or -w/-W of a watch. `path` and `line`
    say where a file's command stands; `tolerant` that an earlier `-i` or `-c` of the file
    (or of the command line) lets the kernel refuse it without stopping the load."""

    op: str  # "add", "prepend", "delete"
    rule: Rule
    line: int | None = None
    warnings: tuple[str, ...] = ()
    path: str | None = None
    tolerant: bool = False

    def where(self) -> str:
        return f"line {self.line} of {self.path}" if self.path else "the command line"


@dataclass(frozen=True)
class Control:
    """A command that is not a rule: -D, -l, -s, -e N, -f N, -b N, -r N, --backlog_wait_time N."""

    op: str  # "delete_all", "list", "status", "enabled", "failure", ...
    value: int | str | None = None
    line: int | None = None


Command = RuleCommand | Control


# ---- listing, as auditctl -l prints (src/auditctl-listing.c) ----------------------------------
def _arch_text(value: int) -> str:
    if value not in KNOWN_ARCHES:
        return f"0x{value:X}"
    return "b64" if value & _64BIT else "b32"


def _perm_text(value: int) -> str:
    return "".join(ch for ch, bit in PERM_BITS if int(value) & bit)


def _field_text(name: str, op: str, value: int | str, watch: bool) -> str:
    if name == "key":
        flag = " -k " if watch else " -F key="
        return "".join(f"{flag}{k}" for k in str(value).split(KEY_SEP) if k)
    if name in ("path", "dir") and watch:
        return f"-w {value}"
    if name == "perm":
        return (" -p " if watch else " -F perm=") + _perm_text(int(value))
    if name == "field_compare":
        left, right = COMPARE_NAMES.get(int(value), (f"f{value}", ""))
        return f" -C {left}{op}{right}"
    if isinstance(value, str):
        return f" -F {name}{op}{value}"
    if name in ("a0", "a1", "a2", "a3"):
        return f" -F {name}{op}0x{int(value) & 0xFFFFFFFF:X}"
    if name == "inode":
        return f" -F {name}{op}{int(value) & 0xFFFFFFFF}"
    if name == "exit":
        v = s32(int(value))
        err = tables.errno_name(v, kernel=False) if v < 0 else None
        return f" -F exit{op}-{err}" if err else f" -F exit{op}{v}"
    if name == "msgtype" and int(value) in tables.msg_types():
        return f" -F msgtype{op}{tables.msg_types()[int(value)]}"
    if name.startswith("f") and name[1:].isdigit():
        return f" {name}{op}{s32(int(value))}"
    return f" -F {name}{op}{s32(int(value))}"  # auditctl's default: signed decimal


def format_rule(rule: Rule) -> str:
    """A rule's `auditctl -l` line (arch first, then -S, then the other fields in order)."""
    watch = rule.is_watch()
    out = [] if watch else [f"-a {rule.action},{rule.list}"]
    arch = None
    if not watch:
        for name, op, value in rule.fields:
            if name == "arch":
                arch = int(value)
                out.append(f" -F arch{op}{_arch_text(arch)}")
        if rule.takes_syscalls():
            out.append(_syscalls_text(list(rule.syscalls), arch))
    for name, op, value in rule.fields:
        if name != "arch":
            out.append(_field_text(name, op, value, watch))
    return "".join(out)


def _syscalls_text(syscalls: list[int], arch: int | None) -> str:
    if not syscalls:
        return " -S all"
    arch = arch if arch in KNOWN_ARCHES else tables.host_arch()
    return " -S " + ",".join(tables.syscall_name(arch, nr) or str(nr) for nr in syscalls)


# ---- value conversions, as libaudit does them ---------------------------------------------
_C_INT = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def c_strtol(text: str) -> int:
    """strtol/strtoul(text, NULL, 0): the leading number, trailing text ignored; 0 if none."""
    m = _C_INT.match(text)
    if not m:
        return 0
    digits = m.group(2)
    n = (
        int(digits, 16)
        if digits[:2] in ("0x", "0X")
        else int(digits, 8 if digits != "0" and digits.startswith("0") else 10)
    )
    return -n if m.group(1) == "-" else n


def machine_arches(host: int | None = None) -> tuple[int, int]:
    """(b64, b32) AUDIT_ARCH values of the machine."""
    host = tables.host_arch() if host is None else host
    if host not in ARCH_PAIRS:
        raise RuleError("machine type not found")
    return ARCH_PAIRS[host]


def rule_syscalls(arch: str, names) -> list[int]:
    """The numbers of syscalls `names` under a rule's `-F arch=b64|b32`, leaving out those
    that arch lacks."""
    b64, b32 = machine_arches()
    const = {"b64": b64, "b32": b32}[arch]
    return [n for n in (tables.syscall_number(const, name) for name in names) if n is not None]


def arch_value(text: str, host: int | None = None) -> int:
    """-F arch=VALUE -> AUDIT_ARCH: b64, b32, a machine name, or an AUDIT_ARCH number."""
    b64, b32 = machine_arches(host)
    low = text.lower()
    if low == "b64":
        return b64
    if low == "b32":
        return b32
    if low in _MACHINE_NAMES:
        value = _MACHINE_NAMES[low]
        if value not in (b64, b32):
            raise RuleError("arch requested bit level not supported by machine")
        return value
    if text[:1].isdigit():
        value = c_strtol(text) & 0xFFFFFFFF
        if value not in KNOWN_ARCHES:
            raise RuleError("arch elf mapping not found")
        return value
    raise RuleError("arch machine type not found")


def errno_value(text: str) -> int:
    neg = text.startswith("-")
    name = text[1:] if neg else text
    for num in range(1, 4096):
        if tables.errno_name(num, kernel=False) == name:
            return -num if neg else num
    return 0


def msgtype_value(text: str) -> int:
    for num, name in tables.msg_types().items():
        if name == text:
            return num
    return 0


# ---- one -F NAME OP VALUE -------------------------------------------------------------------
# operators, longest first, as libaudit searches for them
_OP_ORDER = ("!=", ">=", "<=", "&=", "=", ">", "<", "&")


def split_pair(pair: str, ops: Iterable[str] = _OP_ORDER) -> tuple[str, str, str] | None:
    for op in ops:
        i = pair.find(op)
        if i >= 0:
            return pair[:i], op, pair[i + len(op) :]
    return None


@dataclass
class _Builder:
    """The state auditctl keeps while it reads one command line."""

    line: int | None
    list: str | None = None
    action: str | None = None
    op: str | None = None
    arch: int | None = None
    syscalls: set[int] | None = None  # None: no -S given; empty set never
    all_syscalls: bool = False
    fields: list[Field] = field(default_factory=lambda: [])
    keys: list[str] = field(default_factory=lambda: [])
    syscall_added: bool = False
    perm_added: bool = False
    exe_added: bool = False
    watch: bool = False
    warnings: list[str] = field(default_factory=lambda: [])

    def add_field(self, f: Field) -> None:
        if len(self.fields) >= MAX_FIELDS - 1:
            raise RuleError(f"Too many fields in rule: {f[0]}")
        self.fields.append(f)


def _number(v: str, name: str) -> int:
    if not v[:1].isdigit():
        raise RuleError(f"-F value should be number for {name}")
    return c_strtol(v)


def _signed_or_unsigned(v: str, name: str) -> int | None:
    if v[:1].isdigit() or (len(v) >= 2 and v[0] == "-" and v[1].isdigit()):
        return c_strtol(v) & 0xFFFFFFFF
    return None


def field_pair(b: _Builder, pair: str) -> Field:
    """libaudit's audit_rule_fieldpair_data: one -F argument to a normalized field."""
    split = split_pair(pair)
    if split is None:
        raise RuleError(f"-F missing operation for {pair}")
    name, op, v = split
    if not name:
        raise RuleError("-F missing field name before operator for ")
    if not v:
        raise RuleError(f"-F missing value after operation for {name}")
    name = ALIASES.get(name, name)
    if name not in FIELDS or name == "field_compare":
        raise RuleError(f"-F unknown field: {name}")
    flist = b.list
    exit_only = flist == "exit"
    if flist == "exclude" and name not in (
        "pid",
        "uid",
        "gid",
        "auid",
        "msgtype",
        "subj_user",
        "subj_role",
        "subj_type",
        "subj_sen",
        "subj_clr",
        "exe",
    ):
        raise RuleError(
            "Only msgtype, *uid, *gid, pid, and subj* fields can be used with exclude filter"
        )
    value: int | str
    if name in UID_FIELDS:
        n = _signed_or_unsigned(v, name)
        if n is None:
            if v == "unset":
                n = UNSET
            else:
                try:
                    n = pwd.getpwnam(v).pw_uid
                except KeyError:
                    raise RuleError(f"Unknown user: {v}") from None
        value = n
    elif name in GID_FIELDS:
        if v[:1].isdigit():
            value = c_strtol(v) & 0xFFFFFFFF
        else:
            try:
                value = grp.getgrnam(v).gr_gid
            except KeyError:
                raise RuleError(f"Unknown group: {v}") from None
    elif name == "exit":
        if not exit_only:
            raise RuleError("exit can only be used with exit filter list")
        n = _signed_or_unsigned(v, name)
        if n is None:
            n = errno_value(v)
            if n == 0:
                raise RuleError(f"-F unknown errno - {name}")
        value = s32(n)
    elif name == "msgtype":
        if flist not in ("exclude", "user"):
            raise RuleError("msgtype field can only be used with exclude or user filter list")
        value = c_strtol(v) if v[:1].isdigit() else msgtype_value(v)
        if not value:
            raise RuleError(f"-F unknown message type - {name}")
    elif name in STRING_FIELDS:
        if (
            name
            in ("obj_user", "obj_role", "obj_type", "obj_lev_low", "obj_lev_high", "path", "dir")
            and not exit_only
        ):
            raise RuleError(f"{name} can only be used with exit filter list")
        if name in ("path", "dir"):
            b.perm_added = True
        if name == "exe":
            if op not in ("=", "!="):
                raise RuleError(f"{name} only takes = or != operators")
            b.exe_added = True
        if name == "key":
            raise AssertionError("keys are collected by the caller")
        if len(v) > PATH_MAX:
            raise RuleError("String value too long")
        value = v
    elif name == "arch":
        if b.syscall_added:
            raise RuleError(f"{name} must be before -S")
        if op not in ("=", "!="):
            raise RuleError(f"{name} only takes = or != operators")
        try:
            value = arch_value(v)
        except RuleError as e:
            raise RuleError(e.message.replace("arch ", f"{name} ", 1)) from None
        b.arch = value
    elif name == "perm":
        if not exit_only:
            raise RuleError(f"{name} can only be used with exit filter list")
        if op != "=":
            raise RuleError(f"{name} only takes = operator")
        if len(v) > 4:
            raise RuleError("String value too long")
        bits = 0
        for ch in v.lower():
            if ch not in "rwxa":
                raise RuleError("Permission can only contain  'rwxa'")
            bits |= dict(PERM_BITS)[ch]
        value = bits
        b.perm_added = True
    elif name in ("filetype", "fstype", "saddr_fam"):
        value = _other_numeric(b, name, op, v)
    elif name in ("a0", "a1", "a2", "a3"):
        n = _signed_or_unsigned(v, name)
        if n is None:
            raise RuleError(f"-F value should be number for {name}")
        value = n
    elif name == "sessionid":
        if flist not in ("exclude", "user", "exit"):
            raise RuleError(f"{name} must be used with exclude, user, or exit filter")
        n = _signed_or_unsigned(v, name)
        value = UNSET if n is None and v == "unset" else (n or 0)
    else:
        if name in ("devmajor", "devminor", "inode", "success") and not exit_only:
            raise RuleError(f"{name} can only be used with exit filter list")
        if name == "inode" and op not in ("=", "!="):
            raise RuleError(f"{name} only takes = or != operators")
        if name == "ppid" and not exit_only:
            raise RuleError(f"{name} can only be used with exit filter list")
        value = _number(v, name) & 0xFFFFFFFF
    return name, op, value


_FILETYPES = {name: mode for mode, name in tables.file_types().items()}
_FSTYPES = {"debugfs": 0x64626720, "tracefs": 0x74726163}


def _other_numeric(b: _Builder, name: str, op: str, v: str) -> int:
    if name == "filetype":
        if b.list != "exit":
            raise RuleError(f"{name} can only be used with exit filter list")
        if v not in _FILETYPES:
            raise RuleError(f"-F unknown file type -  {name}")
        return _FILETYPES[v]
    if name == "fstype":
        if b.list != "filesystem":
            raise RuleError(f"{name} field is not valid for the filter")
        if op not in ("=", "!="):
            raise RuleError(f"{name} only takes = or != operators")
        n = c_strtol(v) if v[:1].isdigit() else _FSTYPES.get(v, -1)
        if n == -1:
            raise RuleError(f"file system type is unknown for field: {name}")
        b.perm_added = True  # libaudit's _audit_filterfsadded: a key may follow
        return n
    n = c_strtol(v) & 0xFFFFFFFF
    if n >= 46:  # AF_MAX
        raise RuleError(f"value is too large for field: {name}")
    return n


def compare_pair(b: _Builder, pair: str) -> Field:
    """libaudit's audit_rule_interfield_comp_data: -C LEFT(=|!=)RIGHT."""
    split = split_pair(pair, ("!=", "="))
    if split is None:
        raise RuleError(f"{pair} only takes = or != operators")
    left, op, right = split
    if not left:
        raise RuleError("-C missing field name before operator for ")
    if not right:
        raise RuleError(f"-C missing value after operation for {left}")
    left, right = ALIASES.get(left, left), ALIASES.get(right, right)
    if left not in FIELDS:
        raise RuleError(f"-C unknown field: {left}")
    if right not in FIELDS:
        raise RuleError(f"-C unknown right hand value for comparison with: {left}")
    if b.list != "exit":
        raise RuleError(f"{left} can only be used with exit filter list")
    if (left, right) not in COMPARES:
        raise RuleError(f"-C incompatible comparison {left}")
    return "field_compare", op, COMPARES[(left, right)]


# ---- -S ------------------------------------------------------------------------------------
def syscall_numbers(b: _Builder, arg: str) -> None:
    if b.list in ("task", "user", "filesystem"):
        name = {"task": "task", "user": "user", "filesystem": "filesystem"}[b.list]
        raise RuleError(f"Error: syscall auditing being added to {name} list")
    if b.list == "exclude":
        raise RuleError("Error: syscall auditing cannot be put on exclude list")
    arch = b.arch if b.arch is not None else tables.host_arch()
    names = arg.split(",") if "," in arg else [arg]
    for name in names:
        if name == "all":
            b.all_syscalls = True
            continue
        nr = tables.syscall_number(arch, name)
        if nr is None and name[:1].isdigit():
            nr = c_strtol(name)
        if nr is None or nr < 0:
            raise RuleError(f"Syscall name unknown: {name}")
        if nr >= 2048:
            raise RuleError(f"Syscall name unknown: {name}")
        b.syscalls = (b.syscalls or set()) | {nr}
    if b.arch is None and _mismatch([n for n in names if n != "all"]):
        b.warnings.append("WARNING - 32/64 bit syscall mismatch, you should specify an arch")
    b.syscall_added = True


def _mismatch(names: list[str]) -> bool:
    """auditctl's check_rule_mismatch: would the 32-bit table give other numbers?"""
    host = tables.host_arch()
    if host not in ARCH_PAIRS:
        return False
    b32 = ARCH_PAIRS[host][1]
    for name in names:
        if name[:1].isdigit():
            continue
        if tables.syscall_number(host, name) != tables.syscall_number(b32, name):
            return True
    return False


# ---- -w ------------------------------------------------------------------------------------
def watch_rule(b: _Builder, path: str) -> None:
    if b.list is not None:
        raise RuleError("watch option can't be given with a syscall")
    if len(path) >= PATH_MAX:
        raise RuleError("The path passed for the watch is too big")
    if not path.startswith("/"):
        raise RuleError("The path must start with '/'")
    if len(os.path.basename(path)) > 255:
        raise RuleError("The base name of the path is too big")
    if len(path) > 2:
        path = path.rstrip("/") or "/"
    kind = "path"
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            kind = "dir"
    except OSError:
        pass
    b.list, b.action, b.op = "exit", "always", "add"
    b.watch = True
    b.syscall_added = b.perm_added = True
    b.all_syscalls = True
    b.fields = [(kind, "=", path), ("perm", "=", 15)]


def watch_perms(b: _Builder, perms: str) -> None:
    if b.list is None:
        raise RuleError("permission option needs a watch given prior to it")
    if len(perms) > 4:
        raise RuleError(f"permission {perms} is too long")
    bits = 0
    for ch in perms:
        if ch.lower() not in "rwxa":
            raise RuleError(f"Permission {ch} isn't supported")
        bits |= dict(PERM_BITS)[ch.lower()]
    for i, (name, op, _v) in enumerate(b.fields):
        if name == "perm":
            b.fields[i] = (name, op, bits)
            break
    else:
        b.add_field(("perm", "=", bits))
    b.perm_added = True


# ---- a command line ------------------------------------------------------------------------
def _list_action(text: str, flag: str) -> tuple[str, str]:
    word = {"-a": "Append rule", "-A": "Add rule", "-d": "Delete rule"}[flag]
    parts = text.split(",")
    if len(parts) != 2:
        raise RuleError(f"{word} - bad keyword {text}")
    a, b = parts
    if a in ACTIONS and b in LISTS:
        action, flist = a, b
    elif b in ACTIONS and a in LISTS:
        action, flist = b, a
    else:
        raise RuleError(f"{word} - bad keyword {text}")
    if action == "possible":
        raise RuleError("Append rule - possible is deprecated")
    return flist, action


_TAKES_ARG = set("eafrbAdSFmRwWkpqC")
_LONG = {
    "--backlog_wait_time": True,
    "--loginuid-immutable": False,
    "--reset-lost": False,
    "--signal": True,
    "--reset_backlog_wait_time_actual": False,
}


def _options(argv: list[str]) -> list[tuple[str, str | None]]:
    """getopt_long over auditctl's option string: (flag, argument) pairs."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--"):
            name, eq, val = tok.partition("=")
            if name not in _LONG:
                raise RuleError(f"Option {tok} is invalid")
            if _LONG[name] and not eq:
                i += 1
                if i >= len(argv):
                    raise RuleError(f"Option {tok} is invalid")
                val = argv[i]
            out.append((name, val if _LONG[name] else None))
        elif tok.startswith("-") and len(tok) > 1:
            flag = tok[1]
            if flag not in _TAKES_ARG and flag not in "hicslDvt":
                raise RuleError(f"Option {tok} is invalid")
            if flag in _TAKES_ARG:
                if len(tok) > 2:
                    out.append(("-" + flag, tok[2:]))
                else:
                    i += 1
                    if i >= len(argv):
                        raise RuleError(f"Option {tok} is invalid")
                    out.append(("-" + flag, argv[i]))
            else:
                out.append(("-" + flag, None))
                for extra in tok[2:]:  # grouped flags, as getopt allows
                    out.append(("-" + extra, None))
        else:
            raise RuleError("parameter passed without an option given")
        i += 1
    return out


def parse_args(argv: list[str], line: int | None = None) -> Command | None:
    """One auditctl command line (without the program name): a RuleCommand, a Control for
    the other commands (-D, -l, -i, -c ...), None for no words."""
    if not argv:
        return None
    opts = _options(argv)
    b = _Builder(line)
    control: Control | None = None
    for flag, arg in opts:
        if flag in ("-a", "-A", "-d"):
            if b.op is not None:
                raise RuleError("Multiple rule insert/delete operations are not allowed")
            assert arg is not None
            if "task" in arg and b.syscall_added:
                raise RuleError("Syscall auditing requested for task list")
            b.list, b.action = _list_action(arg, flag)
            b.op = {"-a": "add", "-A": "prepend", "-d": "delete"}[flag]
        elif flag == "-S":
            if b.list is None:
                # auditctl reports this only when sending: "no list specified"
                b.list = None
            syscall_numbers(b, str(arg))
        elif flag == "-F":
            assert arg is not None
            if b.list is None:
                raise RuleError("List must be given before field")
            if arg.startswith("key="):
                _add_key(b, arg[4:])
                continue
            b.add_field(field_pair(b, arg))
        elif flag == "-C":
            b.add_field(compare_pair(b, str(arg)))
        elif flag in ("-w", "-W"):
            watch_rule(b, str(arg))
            if flag == "-W":
                b.op = "delete"
        elif flag == "-p":
            watch_perms(b, str(arg))
        elif flag == "-k":
            if not (b.syscall_added or b.perm_added or b.exe_added) or b.list is None:
                raise RuleError("key option needs a watch or syscall given prior to it")
            _add_key(b, str(arg))
        elif flag == "-R":
            raise RuleError("Error - nested rule files not supported")
        else:
            control = _control(flag, arg, line)
    if b.op is None:
        if b.syscall_added and control is None:
            raise RuleError("Error - no list specified")
        return control
    return _finish(b)


def _add_key(b: _Builder, key: str) -> None:
    total = len(KEY_SEP.join([*b.keys, key]))
    if total > MAX_KEY_LEN:
        raise RuleError("key option exceeds size limit")
    b.keys.append(key)


def _control(flag: str, arg: str | None, line: int | None) -> Control:
    if flag in ("-e", "-f"):
        if arg not in ("0", "1", "2"):
            what = "Enable" if flag == "-e" else "Failure"
            raise RuleError(f"{what} must be 0, 1, or 2 was {arg}")
        return Control("enabled" if flag == "-e" else "failure", int(arg), line)
    if flag in ("-b", "-r", "--backlog_wait_time"):
        what = {"-b": "Backlog", "-r": "Rate", "--backlog_wait_time": "Backlog_wait_time"}[flag]
        if not arg or not arg[:1].isdigit():
            raise RuleError(f"{what} must be a numeric value was {arg}")
        op = {
            "-b": "backlog_limit",
            "-r": "rate_limit",
            "--backlog_wait_time": "backlog_wait_time",
        }[flag]
        return Control(op, c_strtol(arg), line)
    names = {
        "-D": "delete_all",
        "-l": "list",
        "-s": "status",
        "-i": "ignore_errors",
        "-c": "continue_errors",
        "-v": "version",
        "-t": "trim",
        "-h": "help",
        "-m": "message",
        "-q": "equivalent",
        "--loginuid-immutable": "loginuid_immutable",
        "--reset-lost": "reset_lost",
        "--signal": "signal",
        "--reset_backlog_wait_time_actual": "reset_backlog_wait_time_actual",
    }
    return Control(names[flag], arg, line)


def _finish(b: _Builder) -> RuleCommand:
    assert b.list is not None and b.action is not None and b.op is not None
    fields = list(b.fields)
    if b.keys and not (b.syscall_added or b.perm_added or b.exe_added):
        raise RuleError("Key field needs a watch, syscall or exe path given prior to it")
    if b.keys:
        fields.append(("key", "=", KEY_SEP.join(b.keys)))
    takes = b.list in ("exit", "io_uring")
    if takes and (b.all_syscalls or not b.syscalls):
        syscalls: tuple[int, ...] = ()
    else:
        syscalls = tuple(sorted(b.syscalls or ()))
    rule = Rule(b.list, b.action, syscalls if takes else (), tuple(fields))
    return RuleCommand(b.op, rule, b.line, tuple(b.warnings))


def split_line(text: str) -> list[str]:
    """A rule file line into words, as auditctl's fileopt splits it (spaces; `\\ ` escapes
    a space)."""
    words, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in " \\":
            cur.append(text[i + 1])
            i += 2
            continue
        if ch in " \t":
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        words.append("".join(cur))
    return words


def parse_line(text: str, line: int | None = None) -> Rule:
    """One rule line (`-a ...` or `-w ...`) to its Rule; RuleError for anything else."""
    cmd = parse_args(split_line(text), line)
    if not isinstance(cmd, RuleCommand):
        raise RuleError(f"not a rule: {text}")
    return cmd.rule


# auditctl's -i (ignore errors when reading rules from a file) and -c (continue through
# errors, then exit 1): from the line that says so on, a rule that fails is reported and
# the rest of the file is loaded
TOLERANT = ("ignore_errors", "continue_errors")


def parse_text(text: str, path: str = "<rules>", tolerant: bool = False) -> list[Command]:
    """A whole rule file (augenrules format). The first error names its line and stops,
    unless an earlier `-i`/`-c` line (or `tolerant`: one given on the command line) asks to
    go on: then the line becomes a Control("skipped") carrying the error, as auditctl
    reports it and reads on."""
    out: list[Command] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        words = split_line(raw)
        if not words or words[0].startswith("#"):
            continue
        try:
            cmd = parse_args(words, lineno)
        except RuleError as e:
            if not tolerant:
                raise e.at(lineno, path) from None
            out.append(Control("skipped", f"line {lineno} of {path}: {e.message}", lineno))
            continue
        if isinstance(cmd, RuleCommand):
            cmd = replace(cmd, path=path, tolerant=tolerant)
        elif isinstance(cmd, Control) and cmd.op in TOLERANT:
            tolerant = True
        if cmd is not None:
            out.append(cmd)
    return out


def tolerant_from(commands: Iterable[Command]) -> bool:
    """Does one of these commands say -i or -c?"""
    return any(isinstance(c, Control) and c.op in TOLERANT for c in commands)


def parse_file(path: str | Path, tolerant: bool = False) -> list[Command]:
    p = Path(path)
    try:
        text = p.read_text(errors="surrogateescape")
    except FileNotFoundError:
        raise RuleError(f"audit rules file {p} doesn't exist") from None
    except OSError as e:
        raise RuleError(f"Error opening {p} ({e.strerror})") from None
    return parse_text(text, str(p), tolerant)


def rule_set(commands: Iterable[Command]) -> list[Rule]:
    """The rules a sequence of commands leaves loaded, starting from none: -D clears, -a
    appends, -A prepends, -d deletes (augenrules files begin with -D)."""
    rules: list[Rule] = []
    for cmd in commands:
        if isinstance(cmd, Control):
            if cmd.op == "delete_all":
                rules = []
            continue
        if cmd.op == "add":
            rules.append(cmd.rule)
        elif cmd.op == "prepend":
            rules.insert(0, cmd.rule)
        elif cmd.rule in rules:
            rules.remove(cmd.rule)
    return rules
