"""`audtrace compare SUBCOMMAND [options]`: the eBPF and kernel-audit views side by side.

Each compared subcommand is the tracing subcommand's own click command with its own
options, minus `--source` (always both) and with `--format table|json` for the comparison;
the merged audit stream still goes to `-o`. The declaration is run through a Session whose
hooks collect every written event and, per eBPF event, what explains a miss on the audit
side (the task's audit context, read in the kernel by bind's probe; else its start time).
The pairing itself is tracer/compare.py.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import sys
import time

import click
import orjson
from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.tracer import options
from audtrace.tracer.compare import Facts, compare, format_table

COMPARED = ("bind", "kill")
# in-kernel filter flag -> (the option, the audit rule field that would express it)
FILTER_FIELDS = {"FILTER_PID": ("--pid", "pid"), "FILTER_UID": ("--uid", "uid"),
                 "FILTER_COMM": ("--comm", None), "FILTER_PORT": ("--port", None),
                 "FILTER_ADDR": ("--addr", None), "FILTER_TPID": ("--target-pid", None),
                 "FILTER_TCOMM": ("--target-comm", None)}


def _boot_seconds_of(pid: int) -> float | None:
    """When the process started, in seconds since boot (/proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")


def audit_broader(sub) -> str | None:
    """Request filters the kernel audit rules do not carry and no audit_filter applies
    to the relayed events: audit reports more."""
    if getattr(sub, "audit_filter", None) is not None:
        return None
    ruled = {name for rule in sub.audit_rules for name, _op, _v in rule.fields}
    missing = [opt for flag, (opt, fld) in FILTER_FIELDS.items()
               if sub.program.defines.get(flag) and (fld is None or fld not in ruled)]
    return ", ".join(missing) or None


def _with_key(rules: list, key: str) -> list:
    return [dataclasses.replace(r, fields=[*r.fields, ("key", "=", key)]) for r in rules]


def run_compare(sub, common: dict) -> int:
    from audtrace.tracer.audit.netlink import AuditNetlink
    from audtrace.tracer.session import Options, Session

    with AuditNetlink() as nl:
        was_off = nl.status()["enabled"] == 0
    keys = list(common["keys"])
    if not keys:
        # tell our audit records from those of other rules on this machine
        keys = [f"audtrace-compare-{os.getpid()}"]
        sub = dataclasses.replace(sub, audit_rules=_with_key(sub.audit_rules, keys[0]))
    facts = Facts(audit_was_off=was_off, audit_broader=audit_broader(sub))
    enabled_at = time.clock_gettime(time.CLOCK_BOOTTIME)
    original = sub.to_audit

    def to_audit(ev, keys_, serial):
        out = original(ev, keys_, serial)
        who = getattr(ev, "who", None) or getattr(ev, "context", None)
        detail = getattr(ev, "detail", None)
        if hasattr(detail, "audit_context"):
            if not detail.audit_context:
                facts.no_audit_context.add(who.pid)
        elif was_off:
            started = _boot_seconds_of(who.pid)
            if started is not None and started < enabled_at:
                facts.started_before_audit.add(who.pid)
        return out

    events: list[Event] = []
    opts = Options(source="both", fmt="raw", output=common["output"] or os.devnull,
                   keys=keys, duration=common["duration"], count=common["count"],
                   buffer_bytes=common["buffer_bytes"], log=options.log_policy(common))
    session = Session(dataclasses.replace(sub, to_audit=to_audit), opts,
                      on_event=events.append)
    code = session.run()
    lost = session.final_lost or {}
    facts.audit_lost, facts.ebpf_lost = lost.get("audit", 0), lost.get("ebpf", 0)
    arch = tables.host_arch()
    nrs = {tables.syscall_number(arch, n) for n in sub.program.syscalls} - {None}
    ours = [e for e in events if e.source == "ebpf" or _keyed(e, keys)]
    result = compare(ours, facts, nrs)
    if common["fmt"] == "json":
        sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
    else:
        name = lambda nr: tables.syscall_name(arch, nr)  # noqa: E731
        sys.stdout.write(format_table(result, name) + "\n")
    sys.stdout.flush()
    return code


def _keyed(ev: Event, keys: list[str]) -> bool:
    from audtrace.tracer.records import enc_key

    want = enc_key(keys)
    return any(r.type == "SYSCALL" and r.get("key") == want for r in ev.records)


def _clone(cmd: click.Command, name: str) -> click.Command:
    """The tracing command with --source dropped and --format meaning the comparison's."""
    clone = copy.copy(cmd)
    params = [p for p in cmd.params if p.name not in ("source", "fmt")]
    params.append(click.Option(["--format", "fmt"], type=click.Choice(("table", "json")),
                               default="table", show_default=True,
                               help="The comparison: a table to read, or JSON for scripts."))
    clone.params = params
    clone.help = (f"`audtrace {name}` by eBPF and by kernel audit, side by side: "
                  + (cmd.help or "").split("\n")[0])
    return clone


@click.group()
@click.pass_context
def command(ctx: click.Context) -> None:
    """Run the eBPF probes and kernel audit together; pair the events that describe the same
    syscall and show side by side what each saw, and why one side missed an event."""
    ctx.meta[options.RUNNER] = run_compare


for _name in COMPARED:
    _cmd = importlib.import_module(f"audtrace.tracer.subcommands.{_name}").command
    command.add_command(_clone(_cmd, _name), _name)
