"""Lookup tables as the audit userspace (auditd 3.0.9) knows them.

The tables under ``compat/data/`` are generated, not written by hand, so that
audtrace names syscalls, record types and errnos exactly as ausearch does:

* ``syscalls-<arch>.tsv``  from ``ausyscall <arch> --dump``
* ``msgtypes.tsv``         from libaudit's ``audit_msg_type_to_name()``
* ``errno.tsv``            from libaudit's ``audit_errno_to_name()``
* ``fields.tsv``           from libaudit's ``audit_field_to_name()`` (rule fields, -F NAME)
* ``filetypes.tsv``        from libaudit's ``audit_ftype_to_name()`` (S_IFMT values)

Regenerate them (needs the ``auditd`` package, i.e. ausyscall and libaudit.so.1)::

    python -m audtrace.compat.tables generate [DIR]

Errno *messages* are not stored: ausearch prints glibc's ``strerror()`` and so
does :func:`errno_message` (through :func:`os.strerror`).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

from .ints import s32

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_I386 = 0x40000003

DATA_DIR = Path(__file__).resolve().parent / "data"

# AUDIT_ARCH constant -> the name ausyscall and ausearch use for it.
ARCH_NAMES: dict[int, str] = {
    AUDIT_ARCH_X86_64: "x86_64",
    AUDIT_ARCH_I386: "i386",
    AUDIT_ARCH_AARCH64: "aarch64",
}
ARCH_BY_NAME: dict[str, int] = {v: k for k, v in ARCH_NAMES.items()}

# uname -m -> AUDIT_ARCH of the native syscall ABI.
_UNAME_ARCH = {
    "x86_64": AUDIT_ARCH_X86_64,
    "amd64": AUDIT_ARCH_X86_64,
    "aarch64": AUDIT_ARCH_AARCH64,
    "arm64": AUDIT_ARCH_AARCH64,
    "i386": AUDIT_ARCH_I386,
    "i486": AUDIT_ARCH_I386,
    "i586": AUDIT_ARCH_I386,
    "i686": AUDIT_ARCH_I386,
}

# Kernel-internal errnos (include/linux/errno.h) that reach the audit exit= field
# of interrupted syscalls; libaudit has no names for them (ausearch prints "(null)").
KERNEL_ERRNOS: dict[int, str] = {
    512: "ERESTARTSYS",
    513: "ERESTARTNOINTR",
    514: "ERESTARTNOHAND",
    515: "ENOIOCTLCMD",
    516: "ERESTART_RESTARTBLOCK",
    517: "EPROBE_DEFER",
    518: "EOPENSTALE",
    519: "ENOPARAM",
    521: "EBADHANDLE",
    522: "ENOTSYNC",
    523: "EBADCOOKIE",
    524: "ENOTSUPP",
    525: "ETOOSMALL",
    526: "ESERVERFAULT",
    527: "EBADTYPE",
    528: "EJUKEBOX",
    529: "EIOCBQUEUED",
    530: "ERECALLCONFLICT",
}


def host_arch() -> int:
    """AUDIT_ARCH constant of the running machine's native syscall ABI."""
    machine = platform.machine().lower()
    try:
        return _UNAME_ARCH[machine]
    except KeyError:
        raise RuntimeError(f"unsupported machine type {machine!r}") from None


def arch_name(arch: int) -> str | None:
    """'x86_64' for AUDIT_ARCH_X86_64, None when unknown."""
    return ARCH_NAMES.get(arch)


def _read_tsv(name: str) -> list[tuple[str, str]]:
    rows = []
    with open(DATA_DIR / name, encoding="ascii") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, value = line.rstrip("\n").split("\t", 1)
            rows.append((key, value))
    return rows


@functools.cache
def _syscalls(arch: int) -> tuple[dict[int, str], dict[str, int]]:
    name = ARCH_NAMES.get(arch)
    if name is None:
        return {}, {}
    by_nr = {int(nr): sc for nr, sc in _read_tsv(f"syscalls-{name}.tsv")}
    return by_nr, {sc: nr for nr, sc in by_nr.items()}


def syscall_name(arch: int, nr: int) -> str | None:
    """Name of syscall ``nr`` on ``arch`` (AUDIT_ARCH constant), None if unknown."""
    return _syscalls(arch)[0].get(nr)


def syscall_number(arch: int, name: str) -> int | None:
    """Number of syscall ``name`` on ``arch``, None if that arch has no such syscall."""
    return _syscalls(arch)[1].get(name)


@functools.cache
def msg_types() -> dict[int, str]:
    """Record type number -> name, as libaudit knows them."""
    return {int(num): name for num, name in _read_tsv("msgtypes.tsv")}


@functools.cache
def rule_fields() -> dict[str, int]:
    """Audit rule field name -> the kernel's number (AUDIT_PID is 0, AUDIT_FILTERKEY 210)."""
    return {name: int(num) for num, name in _read_tsv("fields.tsv")}


@functools.cache
def file_types() -> dict[int, str]:
    """S_IFMT value -> the name auditctl's `-F filetype=` and ausearch give it."""
    return {int(mode): name for mode, name in _read_tsv("filetypes.tsv")}


@functools.cache
def _errnos() -> dict[int, str]:
    return {int(num): name for num, name in _read_tsv("errno.tsv")}


def errno_name(err: int, *, kernel: bool = True) -> str | None:
    """'EADDRINUSE' for -98 or 98.

    With ``kernel`` (the default) the kernel-internal codes (ERESTARTSYS, 512...)
    are named too; ``kernel=False`` answers exactly like libaudit (None for them).
    """
    err = abs(err)
    name = _errnos().get(err)
    if name is None and kernel:
        name = KERNEL_ERRNOS.get(err)
    return name


def errno_message(err: int) -> str:
    """glibc's strerror() text for -98 or 98: 'Address already in use'. Like ausearch,
    which passes a long long to strerror(int): the number is cut to 32 bits."""
    return os.strerror(s32(abs(err)))


# ----------------------------------------------------------------- generation


def _dump_syscalls(arch_name_: str) -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ausyscall", arch_name_, "--dump"], check=True, capture_output=True, text=True
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].isdigit():  # skips "Using x86_64 syscall table:"
            rows.append((int(parts[0]), parts[1]))
    if not rows:
        raise RuntimeError(f"ausyscall {arch_name_} --dump gave no table")
    return rows


def _libaudit_table(func: str, numbers: range) -> list[tuple[int, str]]:
    lib = ctypes.CDLL("libaudit.so.1")
    fn = getattr(lib, func)
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_int]
    rows = []
    for i in numbers:
        name = fn(i)
        if name:
            rows.append((i, name.decode("ascii")))
    return rows


def _auditd_version() -> str:
    out = subprocess.run(["ausearch", "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip()


def _write_tsv(path: Path, source: str, rows: list[tuple[int, str]]) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(f"# generated by `python -m audtrace.compat.tables generate` from {source}\n")
        for num, name in rows:
            f.write(f"{num}\t{name}\n")


def generate_data(dest: Path = DATA_DIR) -> None:
    """Regenerate every table under ``dest`` from the installed audit userspace."""
    dest.mkdir(parents=True, exist_ok=True)
    version = _auditd_version()
    for name in ARCH_NAMES.values():
        _write_tsv(
            dest / f"syscalls-{name}.tsv",
            f"ausyscall {name} --dump ({version})",
            _dump_syscalls(name),
        )
    # Record types are below 10000 (AUDIT_LAST_USER_MSG2 is 2999, AUDIT_*_MAC < 2000).
    _write_tsv(
        dest / "msgtypes.tsv",
        f"libaudit audit_msg_type_to_name ({version})",
        _libaudit_table("audit_msg_type_to_name", range(10000)),
    )
    _write_tsv(
        dest / "errno.tsv",
        f"libaudit audit_errno_to_name ({version})",
        _libaudit_table("audit_errno_to_name", range(4096)),
    )
    # rule fields are below 256 (AUDIT_FILTERKEY is 210); file types are S_IFMT values
    _write_tsv(
        dest / "fields.tsv",
        f"libaudit audit_field_to_name ({version})",
        _libaudit_table("audit_field_to_name", range(256)),
    )
    _write_tsv(
        dest / "filetypes.tsv",
        f"libaudit audit_ftype_to_name ({version})",
        _libaudit_table("audit_ftype_to_name", range(0, 0o200000, 0o10000)),
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "generate" or len(argv) > 2:
        print("usage: python -m audtrace.compat.tables generate [DIR]", file=sys.stderr)
        return 2
    generate_data(Path(argv[1]) if len(argv) == 2 else DATA_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
