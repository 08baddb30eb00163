"""What a subcommand declares, and the pieces every declaration is made of.

A subcommand module (tracer/subcommands/NAME.py) is a declaration: its request, the BPF
program with the request's filters compiled in (`program`), how the program's bytes decode
and which audit records they become, the kernel audit rules that express the same request
(`audit_rules`) and what those rules cannot say (a relay filter, tracer/audit/match.py), and
its command line (`command`). What it declares is a session.Subcommand; tracer/session.py
runs any.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from audtrace.compat.rules import Rule, rule_syscalls
from audtrace.tracer import options
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.session import Subcommand

Fields = list[tuple[str, str, "int | str"]]


# ---- the program: the request's filters compiled in ---------------------------------------
def program(source: str, syscalls, defines: dict[str, int | str] | None = None, *,
            pids=(), uids=(), comms=(), maps: dict[str, list] | None = None,
            **spec) -> ProgramSpec:
    """bpf/SOURCE on these syscalls, with the sender filters every family shares (pids, real
    uids, comms) and the family's own maps (`maps`: name -> keys). Each map is filled with
    its keys, and a filter_NAME map's FILTER_NAME says whether it is in use, so a filter not
    asked for costs nothing in the kernel. `spec`: the rest of ProgramSpec (extra_attach,
    generated)."""
    filled: dict[str, list] = {"filter_pid": list(pids), "filter_uid": list(uids),
                               "filter_comm": [c.encode() for c in comms], **(maps or {})}
    flags: dict[str, int | str] = {name.upper(): int(bool(keys)) for name, keys in filled.items()
                                   if name.startswith("filter_")}
    return ProgramSpec(source, tuple(syscalls), {**flags, **(defines or {})},
                       {name: keys for name, keys in filled.items() if keys}, **spec)


# ---- the same request as kernel audit rules ------------------------------------------------
def each(base: Fields, tail: Fields, **choices) -> list[Fields]:
    """Rule fields for every combination of the given choices, one `-F NAME=VALUE` per
    chosen name: `each(base, tail, pid=[1, 2], uid=[0])` -> [base + pid=1 uid=0 + tail,
    base + pid=2 uid=0 + tail]. An empty choice adds no field. Kernel audit ANDs a rule's
    fields and ORs its rules, so a request for several pids is one rule per pid."""
    out = [list(base)]
    for name, values in choices.items():
        if values:
            out = [[*fields, (name, "=", v)] for fields in out for v in values]
    return [[*fields, *tail] for fields in out]


def audit_rules(syscalls, keys: list[str], fields: Fields = (), arch: str = "b64",
                **choices) -> list[Rule]:
    """`-a always,exit -F arch=ARCH -S SYSCALL... FIELDS [-F NAME=VALUE] -F key=KEY...`:
    one rule for every combination of the choices (`pid=req.pids, uid=req.uids`: each pid
    and each uid asked, see `each`); none when the arch has none of the syscalls."""
    nrs = rule_syscalls(arch, syscalls)
    if not nrs:
        return []
    base: Fields = [("arch", "=", arch), *fields]
    tail: Fields = [("key", "=", k) for k in keys]
    return [Rule(syscalls=nrs, fields=f) for f in each(base, tail, **choices)]


# ---- the command line ----------------------------------------------------------------------
@functools.cache
def _common_names() -> tuple[str, ...]:
    """The parameters options.common_options adds, by name."""
    probe = options.common_options(lambda **_: None)
    return tuple(p.name for p in probe.__click_params__)


def command(declaration: Callable[[Any, list[str]], Subcommand]) -> Callable:
    """The click command of a subcommand. Decorates `f(common, **own)`: the options written
    below this decorator are its own, the output options every subcommand shares come after
    them (options.common_options) and reach `f` as the dict `common`, which it may change
    (`watch` sets its source). `f` checks what the options say together and returns the
    request; `declaration(request, keys)` makes the Subcommand, run as any other."""
    def wrap(f: Callable) -> click.Command:
        own = f.__dict__.pop("__click_params__", [])

        @functools.wraps(f)
        def run(**params) -> None:
            # `audtrace compare` drops --source from the command: it runs both
            common = {name: params.pop(name) for name in _common_names() if name in params}
            request = f(common, **params)
            options.run(declaration(request, list(common["keys"])), common)

        options.common_options(run)
        run.__click_params__ += own     # type: ignore[attr-defined]  # listed first
        return click.command()(run)
    return wrap
