"""`audtrace rules`: administrators' auditctl rules, run as in-kernel eBPF filters where exact.

    audtrace rules -R /etc/audit/rules.d/30-stig.rules
    audtrace rules -a always,exit -F arch=b64 -S kill -F a1=15 -k killed
    audtrace rules -R my.rules --explain      # where each rule runs, and why

The rule language is compat/rules.py (auditctl's, with its errors); placement and the
generated C filters are tracer/ebpf/rule_filter.py; bpf/rules.c runs them. Rules eBPF cannot
express exactly go to kernel audit (tracer/audit/source.py) and both feed one stream.
Records are SYSCALL + PROCTITLE as the kernel writes them, key= from the deciding rule.

The pieces (`spec_for`, `decoder`, `records_for`) are syscall-generic: `audtrace trace`
reuses them, and so can any subcommand that states its request as audit rules.
"""

from __future__ import annotations

import errno
import os
import platform
import sys
from dataclasses import dataclass

import click
from audtrace.compat import rules as R
from audtrace.compat import tables
from audtrace.compat.record import Event
from audtrace.tracer import declare, options
from audtrace.tracer.audit.netlink import AuditError
from audtrace.tracer.ebpf import hooks, layout, rule_filter
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import event_of, proctitle_record, syscall_record
from audtrace.tracer.session import Subcommand

# auditctl settings of the kernel audit subsystem itself: audtrace leaves them alone
_SETTINGS = {"enabled": "-e", "failure": "-f", "backlog_limit": "-b", "rate_limit": "-r",
             "backlog_wait_time": "--backlog_wait_time"}
_STATUS = ("enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost", "backlog",
           "backlog_wait_time", "backlog_wait_time_actual")
@dataclass
class RuleDetail:
    rule: int            # the deciding eBPF rule, 1-based
    returned: bool       # False for exit/exit_group: no result


def spec_for(plan: rule_filter.Plan, trace_tree: list[int] | None = None) -> ProgramSpec:
    """bpf/rules.c with the plan's filters, on the syscalls the eBPF rules name (every
    syscall when one names none; the hooks are chosen when the program loads)."""
    host = tables.host_arch()
    defines: dict[str, int | str] = {}
    for name in rule_filter.NO_RETURN:
        nr = tables.syscall_number(host, name)
        defines[f"NR_{name.upper()}"] = -1 if nr is None else nr
    if rule_filter.uses_exe(plan):
        defines["RULES_NEED_EXE"] = 1
    nrs = rule_filter.syscall_union(plan)
    names = sorted(n for nr in (nrs or ()) if (n := tables.syscall_name(host, nr)))
    # a number without a name has no tracepoint to name: every syscall, the filter decides
    every = nrs is None or len(names) != len(nrs)
    need_raw = ""
    if plan.compat:
        # 32-bit calls reach only the raw hooks, which test their numbers too
        b32 = plan.arches[1]
        defines["RULES_COMPAT"] = 1
        for name in rule_filter.NO_RETURN:
            nr = tables.syscall_number(b32, name)
            defines[f"NR32_{name.upper()}"] = -1 if nr is None else nr
        native, compat = rule_filter.traced_numbers(plan)
        both = None if native is None or compat is None else native | compat
        defines["TRACED_NR(nr)"] = hooks.traced_nr_macro(both)
        need_raw = "32-bit rules run in eBPF: only raw tracepoints see 32-bit calls"
    if trace_tree is not None:
        defines["TRACE_TREE"] = 1
    return declare.program("rules.c", [] if every else names, defines,
                           maps={"traced": list(trace_tree or [])},
                           generated=rule_filter.c_source(plan, host), every_syscall=every,
                           need_raw=need_raw)


def compat_in_ebpf() -> str | None:
    """None when 32-bit rules can run in eBPF on this machine (raw hooks, with the 32-bit
    argument registers known), else why not (their rules then run in kernel audit)."""
    machine = platform.machine()
    if machine not in layout.COMPAT_REGS or machine not in hooks.COMPAT:
        return f"32-bit syscalls are not traced in eBPF on {machine}"
    if os.environ.get(hooks.FORCE_ENV) == hooks.TRACEPOINTS:
        return f"32-bit syscalls do not reach the syscall tracepoints ({hooks.FORCE_ENV})"
    return None


def decoder(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x = d.codec("family_extra").unpack_from(extra)
    ev.detail = RuleDetail(x.rule, bool(x.returned))
    if x.compat:
        ev.arch = R.machine_arches(d.arch)[1]
    return ev


def records_for(plan: rule_filter.Plan):
    """to_audit for events of the plan's filter: SYSCALL (fields as the kernel writes them,
    key= of the deciding rule) and PROCTITLE."""
    def to_audit(ev: SyscallEvent, _keys: list[str], serial: int) -> Event:
        detail: RuleDetail = ev.detail
        # exit/exit_group: audit writes no result; its success test is IS_ERR_VALUE
        sysc = syscall_record(ev, plan.keys(detail.rule),
                                            result="is_err" if detail.returned else "none")
        return event_of(ev, [sysc, proctitle_record(ev.who)], serial)
    return to_audit


# ---- the rule set from the command line and files -------------------------------------
_STARTERS = {"-a", "-A", "-d", "-w", "-W", "-D", "-l", "-s", "-e", "-f", "-b", "-r",
             "--backlog_wait_time"}


def command_line_commands(argv: list[str]) -> list[R.Command]:
    """auditctl words as typed after `audtrace rules`: one command per -a/-w/-D/..."""
    groups: list[list[str]] = []
    for i, tok in enumerate(argv):
        head = tok[:2] if tok.startswith("-") and not tok.startswith("--") else tok
        if head in _STARTERS and (i == 0 or argv[i - 1] not in ("-k", "-F", "-S", "-p", "-C")):
            groups.append([tok])
        elif groups:
            groups[-1].append(tok)
        else:
            groups.append([tok])
    out = []
    for words in groups:
        cmd = R.parse_args(words)
        if cmd is not None:
            out.append(cmd)
    return out


def load(files: list[str], argv: list[str]) -> tuple[list[R.Rule], list[R.Command]]:
    """The rule set of the files, then the command line. `-i`/`-c` (in a file, from its
    line on and through the files after it, as augenrules' one concatenated file reads;
    on the command line, for every file) make a bad line a reported skip."""
    given = command_line_commands(argv)
    tolerant = R.tolerant_from(given)
    commands: list[R.Command] = []
    for f in files:
        got = R.parse_file(f, tolerant)
        tolerant = tolerant or R.tolerant_from(got)
        commands += got
    commands += given
    return R.rule_set(commands), commands


def _how(commands: list[R.Command]) -> str:
    return "-c" if any(isinstance(c, R.Control) and c.op == "continue_errors"
                       for c in commands) else "-i"


def notices(commands: list[R.Command]) -> list[str]:
    out = []
    for cmd in commands:
        where = f"line {cmd.line}: " if cmd.line else ""
        if isinstance(cmd, R.RuleCommand):
            out += [f"{where}{w}" for w in cmd.warnings]
        elif cmd.op == "skipped":
            out.append(f"{cmd.value}; left out ({_how(commands)})")
        elif cmd.op in _SETTINGS:
            out.append(f"{where}{_SETTINGS[cmd.op]} {cmd.value} left alone: audtrace does not "
                       "change kernel audit settings")
    return out


class Refusals:
    """Kernel audit rules the kernel refused, and whether the rule set lets the load go on:
    a rule added after `-i`/`-c` (auditctl's "ignore errors", "continue through errors") is
    reported in one line naming its file and line, and left out; any other refusal stops
    the run, as auditctl stops at it."""

    def __init__(self, commands: list[R.Command], plan: rule_filter.Plan) -> None:
        self.how = _how(commands)
        self.skipped = sum(isinstance(c, R.Control) and c.op == "skipped" for c in commands)
        self.refused: list[R.Rule] = []
        adds = [c for c in commands
                if isinstance(c, R.RuleCommand) and c.op in ("add", "prepend")]
        # the kernel form of each rule (and of its 32-bit part) -> the command that gave it
        self._origin: list[tuple[R.Rule, R.RuleCommand]] = []
        for cmd in adds:
            self._origin.append((cmd.rule, cmd))
        for pl in plan.placed:
            if pl.companion is not None:
                cmd = next((c for c in reversed(adds) if c.rule == pl.rule), None)
                if cmd is not None:
                    self._origin.append((pl.companion, cmd))

    def __call__(self, rule: R.Rule, err: OSError) -> bool:
        cmd = next((c for r, c in reversed(self._origin) if r == rule), None)
        if cmd is None:         # a `never` copy audtrace made: the original error stands
            return False
        name = errno.errorcode.get(err.errno or 0, str(err.errno))
        what = f"{cmd.where()}: the kernel refused {rule}: {os.strerror(err.errno or 0)} ({name})"
        if not cmd.tolerant:
            raise AuditError(err.errno or 0, what + " (a rule file's -i or -c line loads the"
                             " rest past such a rule)")
        print(f"audtrace: {what}; left out ({self.how})", file=sys.stderr, flush=True)
        self.refused.append(rule)
        return True

    def status(self, code: int) -> int:
        """auditctl -c exits 1 when a rule failed, -i 0."""
        failed = self.skipped or self.refused
        if code == 0 and failed and self.how == "-c":
            print(f"audtrace: {self.skipped + len(self.refused)} rules left out: exit status 1"
                  " (-c)", file=sys.stderr, flush=True)
            return 1
        return code


def subcommand(plan: rule_filter.Plan, source: str, rules: list[R.Rule],
               refusals: Refusals | None = None) -> Subcommand:
    # both: the kernel runs every rule as auditctl would load it, to compare
    kernel = list(rules) if source == "both" else list(plan.audit)
    return Subcommand(name="rules", program=spec_for(plan), decode=decoder,
                      to_audit=records_for(plan), audit_rules=kernel, audit_always=True,
                      audit_refused=refusals,
                      mechanism=f"{len(plan.ebpf)} rules as eBPF filters")


class _AuditctlCommand(click.Command):
    """audtrace's own options are taken wherever they stand; every other word is auditctl's
    (its -k is a rule key here, not the record key of the other subcommands)."""

    OWN = {"-o": 1, "--output": 1, "--source": 1, "--format": 1, "--duration": 1,
           "--count": 1, "--buffer-pages": 1, "-R": 1, "--explain": 0, "-h": 0, "--help": 0}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own, rest, i = [], [], 0
        while i < len(args):
            tok = args[i]
            name = tok.split("=", 1)[0] if tok.startswith("--") else tok
            if name in self.OWN:
                n = 0 if "=" in tok else self.OWN[name]
                own += args[i:i + 1 + n]
                i += 1 + n
            else:
                rest.append(tok)
                i += 1
        return super().parse_args(ctx, [*own, "--", *rest])


@click.command(cls=_AuditctlCommand)
@click.option("-R", "files", multiple=True, type=click.Path(dir_okay=False),
              help="A rule file in augenrules format (repeatable).")
@click.option("--explain", is_flag=True,
              help="Print where each rule runs (eBPF or kernel audit) and why, then exit.")
@click.argument("auditctl", nargs=-1, type=click.UNPROCESSED)
@options.common_options
def command(files, explain, auditctl, **common) -> None:
    """auditctl rules (-a/-w/-F/-S/-C/-k, -R FILE) as in-kernel eBPF filters where exact."""
    try:
        rules, commands = load(list(files), list(auditctl))
    except R.RuleError as e:
        click.echo(f"audtrace: {e}", err=True)
        sys.exit(1)
    for note in notices(commands):
        click.echo(f"audtrace: {note}", err=True)
    if any(isinstance(c, R.Control) and c.op == "status" for c in commands):
        from audtrace.tracer.audit.netlink import AuditNetlink

        with AuditNetlink() as ctl:     # as auditctl -s prints it
            st = ctl.status()
        click.echo("\n".join(f"{k} {st[k]}" for k in _STATUS))
        sys.exit(0)
    if any(isinstance(c, R.Control) and c.op == "list" for c in commands):
        click.echo("\n".join(str(r) for r in rules) if rules else "No rules")
        sys.exit(0)
    if not rules:
        raise click.UsageError("no rules: give -R FILE or auditctl rule options (-a, -w)")
    no_compat = compat_in_ebpf()
    plan = rule_filter.plan(rules, ebpf=common["source"] != "audit", compat=no_compat is None,
                            no_compat=no_compat or "")
    if explain:
        click.echo("\n".join(rule_filter.explain(plan)))
        sys.exit(0)
    refusals = Refusals(commands, plan)
    options.run(subcommand(plan, common["source"], rules, refusals), common,
                status=refusals.status)
