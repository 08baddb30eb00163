"""Shared by the exec/exit/net/ioctl/clock tests: read a `--source both` log, pair each eBPF
event with the kernel's event for the same call, compare them field by field."""

from __future__ import annotations

import subprocess

from audtrace.compat.record import parse_line, split_fields

Recs = list[tuple[str, dict[str, str]]]


def events(text: str) -> dict[tuple, Recs]:
    out: dict[tuple, Recs] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        _node, rtype, sec, msec, serial, body = parse_line(line)
        out.setdefault((sec, msec, serial), []).append((rtype, dict(split_fields(body))))
    return out


def first(recs: Recs, rtype: str) -> dict[str, str] | None:
    return next((f for t, f in recs if t == rtype), None)


def select(
    text: str, key: str, pid: int, nr: int | None = None, rtype: str = "SYSCALL"
) -> tuple[list, list]:
    """(eBPF events, kernel events) with a `rtype` record of this pid (and syscall)."""
    ebpf, audit = [], []
    for ident, recs in events(text).items():
        rec = first(recs, rtype)
        if rec is None or rec.get("pid") != str(pid) or rec.get("key") != f'"{key}"':
            continue
        if nr is not None and rec.get("syscall") != str(nr):
            continue
        (ebpf if rec.get("src") == "ebpf" else audit).append((ident, recs))
    return ebpf, audit


def diff_records(
    e: dict[str, str], a: dict[str, str], skip: set[str] = frozenset(), only: set[str] | None = None
) -> list[str]:
    """Fields of the kernel's record (or `only` those) missing or different in eBPF's."""
    names = only if only is not None else set(a) - set(skip)
    return [
        f"{n}: ebpf {e.get(n)!r} audit {a.get(n)!r}" for n in sorted(names) if e.get(n) != a.get(n)
    ]


def stamps_close(e_ident: tuple, a_ident: tuple, ms: int = 15) -> bool:
    """audit stamps with the coarse clock at entry: a tick or so before eBPF's stamp."""
    return abs((e_ident[0] * 1000 + e_ident[1]) - (a_ident[0] * 1000 + a_ident[1])) <= ms


def ausearch(log, *args: str) -> str:
    return subprocess.run(
        ["ausearch", "-if", str(log), *args], capture_output=True, text=True
    ).stdout


def aureport(log, *args: str) -> str:
    return subprocess.run(
        ["aureport", "-if", str(log), *args], capture_output=True, text=True
    ).stdout
